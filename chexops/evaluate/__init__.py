"""Evaluation: metrics, bootstrap CIs, DeLong tests, ensembles of checkpoints and their scoring."""

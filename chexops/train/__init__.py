"""Training: one Trainer, its steps, checkpoints, runtime, pretraining and the learning-rate search."""

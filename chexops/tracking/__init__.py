"""The only package importing mlflow: store, runs (Tracker), tags, presentation, registry, pyfunc."""

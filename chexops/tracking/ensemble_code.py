"""The logged ensemble model as code (MLflow's models-from-code): MLflow copies this file into the model and
runs it on load, so the registry holds code and checkpoints rather than a CloudPickle of an EnsembleModel."""

from mlflow.models import set_model

from chexops.tracking.pyfunc import EnsembleModel

set_model(EnsembleModel())

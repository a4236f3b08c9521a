"""Every MLflow tag key chexops writes or queries, defined once: queries, the saved view and the README use these
names, so they are stable. MLflow's own keys (mlflow.*) are the ones its UI reads."""

from __future__ import annotations

# MLflow's own
PARENT = "mlflow.parentRunId"  # the UI nests a run under the run it names
NOTE = "mlflow.note.content"  # the description the UI shows on a run or an experiment
SOURCE_NAME, SOURCE_TYPE, SOURCE_COMMIT = "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit"
DATA_CONTEXT = "mlflow.data.context"  # a dataset input's role: train / valid / test
# MLflow 3.1-3.x UIs open an experiment without this tag in their GenAI (traces) view; this value opens its runs
# (mlflow/server/js: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT).
EXPERIMENT_KIND, CUSTOM_MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"
# A runs-page view the UI loads from an experiment tag `mlflow.sharedViewState.<key>` (what its Share button
# writes; plain JSON of the page state): `#/experiments/<id>/runs?viewStateShareKey=<key>`
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."

# chexops' run tags
STAGE = "chexops.stage"  # pretrain / tune / study (the study's parent run); configuration runs have none
STUDY_RUN = "chexops.study_run"  # on the study's parent run: the study name, how any stage finds it
DVC_EXPERIMENT = "chexops.dvc_experiment"  # the `dvc exp run` experiment a run was made in (none under dvc repro)
DATA = "chexops.data"  # what data made the run's numbers, in words ("synthetic CheXpert-format phantoms, ...")
DATA_HASH = "chexops.data_hash"
FAMILY, GROUP, INITIALIZER = "chexops.family", "chexops.group", "chexops.initializer"
TRUNCATION, TRUNCATION_STRATEGY = "chexops.truncation", "chexops.truncation_strategy"
LABEL_FRACTION = "chexops.label_fraction"
SELECT_METRIC = "chexops.select_metric"
TEST_SOURCE, TEST_SPLIT = "chexops.test_source", "chexops.test_split"
TEST_AUROC = "chexops.test_auroc_6"  # "0.845 [0.790, 0.901]": the headline with its CI, readable in the table
UNDEFINED_TASKS = "chexops.undefined_tasks"
BOOTSTRAP_UNIT = "chexops.bootstrap_unit"
GIT_COMMIT, VERSION = "chexops.git_commit", "chexops.version"
TIMM_TAG, PLUGIN, PLUGIN_VERSION = "chexops.timm_tag", "chexops.plugin", "chexops.plugin_version"
DEVICE, PRECISION = "chexops.device", "chexops.precision"
WEIGHTS_SOURCE = "chexops.weights_source"
TRIAL = "chexops.trial"
ENSEMBLE_SHA256 = "ensemble_sha256"  # a registry version's: what its ensemble computes (records.ensemble_sha256)
REGISTERED_AS = "chexops.registered_as"  # a configuration run's: the registry version its ensemble is
ERROR = "error"  # a failed run's one-line reason

# registry: promotion records on versions, alias history on models (see tracking.registry)
PROMOTION_PREFIX = "chexops.promotion."
HISTORY_PREFIX = "chexops.alias_history."

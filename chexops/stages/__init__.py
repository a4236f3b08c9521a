"""The stages of a study, one module each, all with one signature: `run(ctx: StageContext) -> dict`.

    ingest -> prepare -> pretrain -> tune -> train -> evaluate -> register -> analyze

`dvc repro` runs each through `pipelines/<stage>.py`, which imports only its own module, so a stage's DVC deps are
what it runs. `configuration.run_configuration` (tune's choice -> train -> evaluate -> register) is what `chexops
train` and `chexops worker` run for one configuration. Each stage reads the records of the stages before it and
writes its own (chexops.records); those files are deterministic, so DVC re-runs exactly what changed. Timings and
other measurements go to MLflow and the returned summary. This package holds no __init__ imports on purpose.
"""

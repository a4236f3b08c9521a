"""Stage register: the evaluated ensemble logged as a pyfunc model on its run, a new registry version with alias
`candidate` -> runs/registry/<run>.json. An ensemble identical to a registered version (same checkpoint bytes and
normalisation) registers nothing: the record points at that version and no alias moves. The DVC stage `evaluate`
runs evaluate then register in one process."""

from __future__ import annotations

import logging
from typing import Any

from chexops import naming, records
from chexops.records import EvalRecord, RegistryRecord
from chexops.stages import evaluate
from chexops.stages.context import StageContext
from chexops.stages.experiment import candidate_alias, dataset_inputs, dvc_experiment, tracker_of
from chexops.tracking import tags as tag

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    """Log the ensemble as a pyfunc model, register a new version with alias `candidate` (unless identical;
    `candidate-<experiment>` inside `dvc exp run`, which leaves the baseline's alias where it is)."""
    from chexops.evaluate.metrics import headline_text
    from chexops.tracking.presentation import model_description, version_tags

    config, key = ctx.config, ctx.run
    run_dir = key.train_dir(ctx.runs_dir)
    run_id = records.require_run_id(run_dir)
    record = EvalRecord.read(key.eval_dir(ctx.runs_dir))
    headline = headline_text(record.metrics)
    name = naming.registered_model_name(config.experiment, key.name)
    digest = records.ensemble_sha256(run_dir)
    exp_tag = {tag.DVC_EXPERIMENT: exp} if (exp := dvc_experiment()) else {}
    alias = candidate_alias()
    tracker = tracker_of(ctx)
    tracker.start_run(key.name, {}, {}, run_id=run_id, keep_duration=True)
    with tracker.run_guard(run_id):
        version = tracker.version_with_tag(name, tag.ENSEMBLE_SHA256, digest)
        unchanged = version is not None
        if unchanged:
            log.info(f"{key.name}: the ensemble is identical to {name} version {version} (sha256 {digest[:12]}); "
                     "no new version registered, no alias moved.")
        else:
            version = tracker.log_ensemble(run_id, run_dir / naming.MANIFEST_FILE, name,
                                           version_tags(record, headline) | {tag.ENSEMBLE_SHA256: digest} | exp_tag,
                                           model_name=naming.logged_model_name(key.name),
                                           description=model_description(record, headline, config.eval.ci),
                                           results=model_results(ctx, record), alias=alias)
        tracker.set_tags(run_id, {tag.REGISTERED_AS: f"{name} version {version}"
                                                     + (" (an identical ensemble, registered before)" if unchanged
                                                        else "")})
    tracker.end_run(run_id)
    registered_as = RegistryRecord(name, int(version), "" if unchanged else alias, run_id)
    registered_as.write(key.registry_file(ctx.runs_dir))
    return vars(registered_as) | {"unchanged": unchanged}


def model_results(ctx: StageContext, record: EvalRecord) -> Any:
    """The ensemble's test metrics as its logged model's (ranked in the Models tab, found by
    search_logged_models), on the test split's dataset, with the timestamp and step the run logged them at."""
    from chexops.evaluate.ensemble import read_manifest
    from chexops.tracking.runs import ModelResults

    key = ctx.run
    (test,) = dataset_inputs(ctx.config, ("test",))
    examples = read_manifest(key.train_dir(ctx.runs_dir) / naming.MANIFEST_FILE).get("examples", 0)
    eval_file = key.eval_dir(ctx.runs_dir) / naming.EVAL_FILE
    return ModelResults(evaluate.test_metrics(record), examples, evaluate.logged_at(eval_file), test["name"],
                        test["digest"])


def registered(ctx: StageContext) -> RegistryRecord | None:
    """The registry record of the configuration's current MLflow run, when that run is already registered."""
    record = RegistryRecord.read_if_present(ctx.run.registry_file(ctx.runs_dir))
    run_id = records.read_run_record(ctx.run.train_dir(ctx.runs_dir)).get("run_id")
    return record if record and run_id and record.run_id == run_id else None


def evaluate_and_register(ctx: StageContext) -> dict[str, Any]:
    """evaluate -> register, the DVC stage `evaluate`: one process per configuration pays the imports once."""
    from chexops.evaluate.metrics import headline_text

    payload = evaluate.run(ctx)
    if ctx.run.seed is not None:  # a grid.seeds repeat: its spread is the analysis's; the registry holds one per run
        return {"run": payload["run"], "metrics": payload["metrics"],
                "summary": f"{payload['run']}: test mean AUROC {headline_text(payload['metrics'])}; not registered "
                           "(a grid.seeds repeat)"}
    registered_as = run(ctx)
    return {"run": payload["run"], "metrics": payload["metrics"], "registered": registered_as,
            "summary": f"{payload['run']}: test mean AUROC {headline_text(payload['metrics'])}; registered "
                       f"{registered_as['registered_model']} v{registered_as['version']} ({registered_as['alias']})"}

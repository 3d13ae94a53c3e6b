"""One training = one MLflow run: params, metrics beside the naive baselines, a
signature and input example, a plot, the registered version and the gate's decision.

Called only once the evaluation is valid and the gate has decided (see the model
assets): a run whose holdout cannot score a model fails before anything is logged
or registered.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Callable

from . import signing
from .gate import GateDecision
from .registry import apply_decision

PIP = {"xgboost": ["xgboost"], "lightgbm": ["lightgbm"], "regime": ["hmmlearn", "scipy", "cloudpickle", "pandas"],
       "nhits": ["neuralforecast", "torch", "pandas"], "tcn": ["torch", "pandas"]}


def _log_model(flavor: str, model: Any, tmp: str, **kw):
    import mlflow

    if flavor == "xgboost":
        return mlflow.xgboost.log_model(model, **kw)
    if flavor == "lightgbm":
        return mlflow.lightgbm.log_model(model, **kw)
    if flavor == "regime":  # a python_function model around the pickled RegimeModel
        import cloudpickle

        from . import regime

        # by value, and the wrapper as code: the model loads where trading_platform is not installed
        # (``mlflow models serve`` builds its own environment from the pip requirements)
        cloudpickle.register_pickle_by_value(regime)
        try:
            path = Path(tmp) / "regime_model.pkl"
            with open(path, "wb") as f:
                cloudpickle.dump(model, f)
        finally:
            cloudpickle.unregister_pickle_by_value(regime)
        code = Path(__file__).with_name("pyfunc.py")
        return mlflow.pyfunc.log_model(python_model=str(code), artifacts={"regime_model": str(path)}, **kw)
    if flavor == "nhits":  # the saved forecaster directory, behind a models-from-code wrapper
        path = model.save(Path(tmp) / "nhits")
        code = Path(__file__).parent / "forecast" / "pyfunc.py"
        return mlflow.pyfunc.log_model(python_model=str(code), artifacts={"nhits": str(path)}, **kw)
    if flavor == "tcn":
        from .patterns import tcn

        path = tcn.save(model, Path(tmp) / "tcn")
        code = Path(__file__).parent / "patterns" / "pyfunc.py"
        return mlflow.pyfunc.log_model(python_model=str(code), artifacts={"tcn": str(path)}, **kw)
    raise ValueError(f"unknown flavor {flavor!r}")


def sign_version(client, name: str, version: str, workdir: Path) -> str:
    """The signature of ``name`` ``version``'s artifacts as ``models:/NAME/VERSION`` downloads them (what the
    serving resource will check)."""
    import mlflow

    from ..resources.mlflow import MLflowResource

    # models:/ URIs resolve through the process's registry URI (MLflow ignores the arguments): the client's, here
    uri = getattr(client, "_registry_uri", None) or client.tracking_uri
    MLflowResource(tracking_uri=uri).client()
    mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(workdir))
    return signing.sign(workdir, name)


def log_and_register(*, mlflow_resource, experiment: str, run_name: str, tags: dict, version_tags: dict,
                     flavor: str, model: Any, registered_name: str, target: str, params: dict, metrics: dict,
                     example, predict_example, plot: Callable[[str], str], decision: GateDecision,
                     artifacts: dict[str, Any] | None = None, model_metadata: dict | None = None,
                     market_db=None, required: tuple[str, ...] | list[str] = ()) -> dict:
    """Log the run, register the version, record target, training window and the gate on it, and
    move the alias the gate chose (recorded in the champion history of ``market_db``, when given).

    Two guards run before any alias moves: a ``required`` metric that is missing or not finite (the blocking
    check) registers the version with no alias; a decision to promote that never compared the new version
    with the champion in place (it could not be loaded or scored) leaves the champion its alias and makes the
    new version a challenger, saying so. The returned decision is the one applied."""
    import mlflow
    from mlflow.models import infer_signature

    from .gate import blocked, keep_incumbent
    from .registry import champion_version

    client = mlflow_resource.client()
    bad = [k for k in required if not (isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k]))]
    incumbent = champion_version(client, registered_name)
    if bad:
        decision = blocked(decision, f"metrics missing or not finite: {', '.join(bad)}")
    elif decision.alias == "champion" and decision.champion_mode == "none" and incumbent is not None:
        decision = keep_incumbent(decision, str(incumbent.version), "it could not be loaded or scored: the run's log "
                                                                   "says why")
    with mlflow_resource.run(experiment, run_name, tags) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(params)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))})
        mlflow.log_artifact(plot(str(Path(tmp) / f"{experiment}.png")), artifact_path="plots")
        for fname, obj in (artifacts or {}).items():
            mlflow.log_dict(obj, f"details/{fname}.json")
        mlflow.log_dict(decision.metadata()["gate_comparisons"], "details/gate.json")
        info = _log_model(flavor, model, tmp, name="model", signature=infer_signature(example, predict_example),
                          input_example=example, registered_model_name=registered_name,
                          pip_requirements=PIP[flavor], metadata=model_metadata)
        version = str(info.registered_model_version)
        # signed before any alias can move to it: the serving resource loads only what this platform signed
        client.set_model_version_tag(registered_name, version, signing.TAG,
                                     sign_version(client, registered_name, version, Path(tmp) / "signed"))
        client.set_registered_model_tag(registered_name, "tp.target", target)
        for k, v in {**{k: v for k, v in tags.items() if k.startswith("tp.")}, **version_tags,
                     "tp.target": target}.items():
            client.set_model_version_tag(registered_name, version, k, str(v))
        if market_db is not None:
            with market_db.open() as store:
                apply_decision(client, registered_name, version, decision, conn=store.conn)
        else:
            apply_decision(client, registered_name, version, decision)
        mlflow.set_tags({**decision.tags(), "registered_model": registered_name, "registered_version": version})
        return {"run_id": run.info.run_id, "name": registered_name, "version": version, "decision": decision}

"""One training = one MLflow run: params, metrics beside the naive baseline, a
signature and input example, a plot, the registered version and the gate."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Callable

from .gate import decide
from .registry import apply_decision, champion_version

PIP = {"xgboost": ["xgboost"], "lightgbm": ["lightgbm"], "sklearn": ["scikit-learn", "hmmlearn", "scipy"]}


def log_train_and_gate(*, mlflow_resource, server, experiment: str, run_name: str, tags: dict, flavor: str,
                       model: Any, registered_name: str, params: dict, metrics: dict, example, predict_example,
                       plot: Callable[[str], str], metric: str, direction: str, new_score: float,
                       baseline_score: float, score_champion: Callable[[Any], float],
                       artifacts: dict[str, Any] | None = None) -> dict:
    import mlflow
    from mlflow.models import infer_signature

    log_fn = {"xgboost": mlflow.xgboost.log_model, "lightgbm": mlflow.lightgbm.log_model,
              "sklearn": mlflow.sklearn.log_model}[flavor]
    client = mlflow_resource.client()
    with mlflow_resource.run(experiment, run_name, tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))})
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(plot(str(Path(tmp) / f"{experiment}.png")), artifact_path="plots")
        for fname, obj in (artifacts or {}).items():
            mlflow.log_dict(obj, f"details/{fname}.json")
        extra = {"serialization_format": "cloudpickle"} if flavor == "sklearn" else {}
        info = log_fn(model, name="model", signature=infer_signature(example, predict_example),
                      input_example=example, registered_model_name=registered_name, pip_requirements=PIP[flavor],
                      **extra)
        version = str(info.registered_model_version)
        champ = champion_version(client, registered_name)
        champion_score = None
        if champ is not None and str(champ.version) != version:
            champion_score = float(score_champion(server.load(registered_name, version=str(champ.version))))
        decision = decide(metric, direction, new_score, baseline_score, champion_score)
        apply_decision(client, registered_name, version, decision)
        for k, v in tags.items():  # what serving needs to score the version: family, timeframe, symbol...
            if k.startswith("tp."):
                client.set_model_version_tag(registered_name, version, k, str(v))
        mlflow.set_tags({**decision.tags(), "registered_model": registered_name, "registered_version": version})
        if champion_score is not None and not math.isnan(champion_score):
            mlflow.log_metric(f"champion_{metric}", champion_score)
        return {"run_id": run.info.run_id, "name": registered_name, "version": version, "decision": decision}

"""What the model-training assets share: checks, run tags, the training frame, the
current champion as the gate sees it, and the materialization result.

The order every training asset follows:
1. the lineage check (a run whose target differs from its registered model's is
   refused before anything is logged);
2. the pure train-and-gate function of the family (``trading_platform.models``),
   which refuses a holdout that cannot score a model before anything is trained;
3. one MLflow run that logs and registers the version and moves the alias the
   gate chose.
"""

from __future__ import annotations

import json
import math
from typing import Callable, Optional

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    MetadataValue,
)

GROUP = "models"


def checks(key: AssetKey) -> list[AssetCheckSpec]:
    return [AssetCheckSpec("metrics_finite", asset=key, blocking=True,
                           description="the holdout metrics and the baseline are present and finite"),
            AssetCheckSpec("champion_exists", asset=key,
                           description="the registered model has a champion version")]


def run_tags(context: AssetExecutionContext, family: str, timeframe: str, symbol: str | None) -> dict:
    tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition_key": context.partition_key if context.has_partition_key else (symbol or ""),
            "tp.family": family, "tp.timeframe": timeframe}
    if symbol:
        tags["tp.symbol"] = symbol
    return tags


def training_frame(store, symbols: list[str], timeframe: str):
    import polars as pl

    from ..features.storage import read_features

    frames = [read_features(store.conn, s, timeframe) for s in symbols]
    frames = [f.drop([c for c in f.columns if c.startswith("state_") or c == "computed_at"])
              for f in frames if len(f)]
    if not frames:
        return None
    return pl.concat(frames, how="diagonal_relaxed").sort("symbol", "ts")


def symbol_frame(market_db, symbol: str, wanted: Optional[str]):
    """(timeframe, stored features) of one symbol: `wanted`, else 1h if listed, else its base timeframe.
    The regime and signal models of a symbol read the same frame, so they share one holdout boundary."""
    from ..core.timeframes import parse_timeframe

    with market_db.open() as store:
        info = store.require_symbol(symbol)
        tf = parse_timeframe(wanted) if wanted else ("1h" if "1h" in info.timeframes else info.base_timeframe)
        frame = training_frame(store, [symbol], tf)
    if frame is None:
        raise Failure(description=f"no stored features for {symbol} {tf}; materialize `features` first")
    return tf, frame


def check_lineage(client, name: str, target: str) -> None:
    from ..models.registry import LineageError, check_target

    try:
        check_target(client, name, target)
    except LineageError as e:
        raise Failure(description=e.message) from None


def evaluation_failure(e: Exception) -> Failure:
    return Failure(description=f"{e} (nothing was registered)")


def iso_us(value: Optional[str]) -> Optional[int]:
    """Epoch microseconds of a recorded ISO time (``...Z``), or None."""
    import numpy as np

    return int(np.datetime64(value.rstrip("Z"), "us").astype("int64")) if value else None


def data_end_us(tags: dict) -> Optional[int]:
    """The champion's last training data time (``tp.train_data_end``), if recorded."""
    return iso_us(tags.get("tp.train_data_end"))


def recorded_config(tags: dict) -> Optional[dict]:
    raw = tags.get("tp.config")
    return json.loads(raw) if raw else None


def current_champion(client, server, name: str, log=None):
    """(version tags, loaded model) of name@champion, or None (also when it cannot be loaded: then
    the log says why and the gate decides on the baselines)."""
    from ..models.registry import champion_version
    from ..resources.serving import ModelLoadError

    mv = champion_version(client, name)
    if mv is None:
        return None
    try:
        return dict(mv.tags or {}), server.load(name, version=str(mv.version))
    except ModelLoadError as e:
        if log is not None:
            log.warning("the champion of %s cannot be loaded (%s): deciding on the baselines", name, e)
        return None


def config_of(cls, recorded: dict | None):
    """The family config recorded on a version, keeping only the fields this code still knows; None when
    there is none, or when this code refuses it (a version registered before its values were checked:
    it cannot be refit, and the gate says so)."""
    if not recorded:
        return None
    from dataclasses import fields

    from ..errors import InvalidInput

    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in recorded.items() if k in known})
    except InvalidInput:
        return None


def classifier_champion(client, server, name: str, cfg,
                        features: Callable[[object, dict, object], object],
                        refit: Callable[[object, object], Callable], log=None) -> Callable:
    """The champion for ``classifier.gate``: ``features(loaded, tags, task)`` gives its input matrix over
    the task's rows (with *its own* inputs); ``refit(config, task)`` refits its recorded configuration on
    the task's training rows and returns the fitted model. ``cfg`` is the new version's configuration."""
    from ..models.classifier import Champion
    from ..resources.serving import ModelLoadError

    found = current_champion(client, server, name, log)

    def make(task):
        if found is None:
            return None
        tags, loaded = found
        try:
            X = features(loaded, tags, task)
        except ModelLoadError as e:  # e.g. the regime version it was trained with was deleted
            if log is not None:
                log.warning("the champion of %s cannot be scored (%s): deciding on the baselines", name, e)
            return None
        champ_cfg = config_of(type(cfg), recorded_config(tags))

        def refit_on_task():
            model = refit(champ_cfg, task)
            return lambda rows: model.predict(task.X[rows])

        return Champion(version=loaded.version, data_end_us=data_end_us(tags),
                        predict=lambda rows: loaded.predict(X[rows]), refit=refit_on_task if champ_cfg else None,
                        same_config=champ_cfg == cfg)  # the refit uses this version's inputs: it would be it

    return make


def align_columns(model, columns: list[str], X):
    """X's columns in the order the model was trained on (a champion may predate a feature)."""
    import numpy as np

    names = model.feature_names or columns
    out = np.full((len(X), len(names)), np.nan, dtype=np.float32)
    for j, c in enumerate(names):
        if c in columns:
            out[:, j] = X[:, columns.index(c)]
    return out


def gate_policy(build: Callable, config, margins: dict[str, str], **fixed):
    """The family's gate policy from the asset's Dagster ``Config``, built (and so checked) before anything is
    read or trained: ``margins`` maps each comparison to the config field that sets its minimum improvement
    (``fixed``: margins no field sets). A margin that is not a finite number >= -1, or ``n_boot`` below 100,
    is InvalidInput naming the config field (``GatePolicy`` refuses them too, naming the comparison)."""
    from ..models.gate import check_margin, check_n_boot

    values = {key: check_margin(getattr(config, name), name) for key, name in margins.items()}
    return build(n_boot=check_n_boot(config.n_boot), margins={**fixed, **values})


def pure_config(cls, config):
    """The family's pure configuration from the asset's Dagster ``Config`` (the fields they share); its
    ``__post_init__`` refuses a bad value, naming the config field, before anything is read or trained."""
    from dataclasses import fields

    return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)})


def version_tags(cfg, window: dict, block_len: int, extra: dict | None = None) -> dict:
    """What the gate and ``tp models compare`` need later: the training window, the configuration
    (for a like-for-like refit) and the bootstrap block length."""
    return {**window, "tp.config": json.dumps(cfg.to_dict(), sort_keys=True), "tp.block_len": str(block_len),
            **(extra or {})}


def result(info: dict, metrics: dict, required: list[str], extra: dict | None = None) -> MaterializeResult:
    d = info["decision"]
    md = {"mlflow_run_id": info["run_id"], "registered_model": info["name"], "registered_version": info["version"],
          **{k: (MetadataValue.json(v) if isinstance(v, dict) else v) for k, v in d.metadata().items()},
          "metrics": MetadataValue.json({k: v for k, v in metrics.items() if isinstance(v, (int, float))}),
          **(extra or {})}
    has_champion = d.alias == "champion" or d.champion_mode != "none"
    bad = [k for k in required if not (isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k]))]
    return MaterializeResult(metadata=md, check_results=[
        AssetCheckResult(check_name="metrics_finite", passed=not bad, severity=AssetCheckSeverity.ERROR,
                         metadata={"missing_or_not_finite": MetadataValue.json(bad)}),
        AssetCheckResult(check_name="champion_exists", passed=has_champion, severity=AssetCheckSeverity.WARN),
    ])


def per_symbol(context: AssetExecutionContext, train: Callable[[str], MaterializeResult]) -> MaterializeResult:
    """Train one model per symbol of the run (one partition, or a range: the weekly retraining takes every
    symbol in one run). A symbol that cannot be evaluated does not stop the others; the run then fails,
    naming them, after the others are registered."""
    symbols = context.partition_keys
    if len(symbols) == 1:
        return train(symbols[0])
    results, failures = {}, {}
    for symbol in symbols:
        try:
            results[symbol] = train(symbol)
        except Failure as e:
            failures[symbol] = e.description
            context.log.error("%s: %s", symbol, e.description)
    md = {"models": models_summary(results),
          "not_trained": MetadataValue.json(failures)}
    if failures:
        raise Failure(description=f"{len(failures)} of {len(symbols)} symbols not trained: "
                                  + "; ".join(f"{s}: {d}" for s, d in failures.items()), metadata=md)
    checks = {}
    for r in results.values():
        for c in r.check_results:
            prev = checks.get(c.check_name)
            checks[c.check_name] = c if prev is None or (prev.passed and not c.passed) else prev
    return MaterializeResult(metadata=md, check_results=list(checks.values()))


def models_summary(results: dict) -> MetadataValue:
    """{key: {version, decision}} of per-symbol training results, for a run's metadata."""
    def raw(v):
        return getattr(v, "value", v)

    return MetadataValue.json({k: {"version": raw(r.metadata["registered_version"]),
                                   "decision": raw(r.metadata["gate_decision"])} for k, r in results.items()})

"""``models/pattern_tcn``: the TCN chart-pattern detector (16 patterns plus "none"), trained on
generated windows plus the rule labeler's detections in the managed symbols' stored history.
Registered as ``pattern_tcn``. Judged on a frozen held-out generated set whose settings are
fixed (not tuned): a first version must reach the macro-F1 floor (0.85) with support; later
versions must also beat the champion on the same frozen set with the shared gate's bootstrap.
Every version must also show an edge in the market: its detections in the held-out last part of
the stored history must be followed by the moves their patterns announce (``models/patterns/edge.py``)."""

from typing import List, Optional

from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from ..resources import MarketDB, MLflowResource, ModelServer
from .features import FEATURES_KEY
from .training import GROUP, checks

TCN_KEY = AssetKey(["models", "pattern_tcn"])
HISTORY_BARS = 20_000  # the newest candles of each symbol's series the labeler reads for training


# the blocking check: a version whose metrics are missing or not finite moves no alias
REQUIRED_METRICS = ("macro_f1",)

class TCNTrainConfig(Config):
    epochs: int = 10
    n_synthetic: int = 20_000          # generated training windows
    channels: int = 32
    length: int = 64                   # bars every window is resampled to
    lr: float = 3e-3
    seed: int = 0
    threads: int = 1                   # torch CPU threads while training (0: torch's default; 1 leaves the rest free)
    history_timeframes: List[str] = ["1h", "1d"]  # stored series the labeler labels for training (when listed)
    lineage: Optional[str] = None
    floor: float = 0.85                # macro F1 a first version must reach on the frozen set
    min_improvement_vs_champion: float = 0.005
    n_boot: int = 1000
    # the market's word: detections in the last `history_holdout_frac` of each stored series (never trained
    # on) must be borne out by the `edge_horizon` bars after them (see models/patterns/edge.py)
    history_holdout_frac: float = 0.2
    edge_horizon: int = 24             # bars after a detection whose return is its edge
    detection_threshold: float = 0.5   # a detection's probability at least
    min_detections: int = 10           # fewer: no evidence, no champion
    min_edge: float = 0.0              # lower bound of the mean edge (standard deviations of the return)


def checked_history_timeframes(config: TCNTrainConfig) -> list[str]:
    """The settings of the run that are not the network's (``TCNConfig`` checks those) checked before anything is
    read or trained, naming the config field; returns the history timeframes by their canonical names (an
    unknown one was silently never read)."""
    from ..core.timeframes import parse_timeframe
    from ..models.common import check_int, check_number

    check_number("pattern_tcn", "history_holdout_frac", config.history_holdout_frac, 0, 1, low_open=True,
                 high_open=True)
    check_int("pattern_tcn", "edge_horizon", config.edge_horizon)
    check_int("pattern_tcn", "min_detections", config.min_detections)
    check_number("pattern_tcn", "detection_threshold", config.detection_threshold, 0, 1)
    check_number("pattern_tcn", "floor", config.floor, 0, 1)
    return list(dict.fromkeys(parse_timeframe(t, field="history_timeframes") for t in config.history_timeframes))


def store_history(market_db, timeframes: list[str]) -> dict:
    """symbol/timeframe -> (bars, 4) OHLC of the newest stored candles, for the labeler."""
    import numpy as np

    out = {}
    with market_db.open() as store:
        for info in store.list_symbols(enabled_only=True):
            for tf in timeframes:
                if tf not in info.timeframes:
                    continue
                c = store.read_candles(info.symbol, tf)
                if len(c) >= 256:
                    sl = slice(-HISTORY_BARS, None)
                    out[f"{info.symbol} {tf}"] = np.column_stack([c.open[sl], c.high[sl], c.low[sl], c.close[sl]])
    return out


@asset(key=TCN_KEY, deps=[FEATURES_KEY], check_specs=checks(TCN_KEY), kinds={"pytorch", "mlflow"},
       group_name=GROUP, pool="gpu",
       description="TCN chart-pattern detector (16 patterns + none): dilated causal convolutions trained on "
                   "generated patterns plus labelled history; gated on a frozen held-out generated set "
                   "(macro F1 floor 0.85, then the champion) and on the market: its detections in the held-out "
                   "last `history_holdout_frac` of the stored series must be followed by the moves they announce "
                   "(`edge_horizon` bars, at least `min_detections`). `epochs`, `n_synthetic`, `lr` and `threads` change how "
                   "long it trains, `channels` and `length` the network. Registered as pattern_tcn.")
def pattern_tcn(context: AssetExecutionContext, config: TCNTrainConfig, market_db: MarketDB,
                mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
    import json

    import pandas as pd

    from ..models.patterns import edge as pedge
    from ..models.patterns import evaluate as pe
    from ..models.patterns import gate as pg
    from ..models.patterns import tcn
    from ..models.registry import registered_name
    from ..models.tracking import log_and_register
    from ..resources.serving import resolve_device
    from .training import check_lineage, current_champion, gate_policy, result, run_tags

    # the configuration and the gate's policy are checked before anything is read or trained
    cfg = tcn.TCNConfig(epochs=config.epochs, n_synthetic=config.n_synthetic, channels=config.channels,
                        length=config.length, lr=config.lr, seed=config.seed, threads=config.threads)
    history_timeframes = checked_history_timeframes(config)
    policy = gate_policy(pg.default_policy, config, {"vs_no_edge": "min_edge",
                                                     "vs_champion": "min_improvement_vs_champion"}, vs_floor=0.0)
    name = registered_name("pattern_tcn", lineage=config.lineage)
    target = "patterns: 16 chart patterns + none in a window of candles (frozen evaluation set v1)"
    client = mlflow.client()
    check_lineage(client, name, target)
    history = store_history(market_db, history_timeframes)
    train_history, cuts = pedge.split(history, config.history_holdout_frac)
    model, info = tcn.train(cfg, history=train_history, device=resolve_device(model_server.device),
                            progress=lambda epoch, loss: context.log.info("%s: epoch %d/%d, loss %.4f", name, epoch,
                                                                          cfg.epochs, loss))
    frozen = pe.frozen_set()
    evaluation = pe.evaluate(model, frozen)
    found = current_champion(client, model_server, name, context.log)
    champion_pred = pe.evaluate(found[1].model, frozen, labeler=False).predictions["tcn"] if found else None
    edge = pedge.measure(model, history, cuts, horizon=config.edge_horizon, threshold=config.detection_threshold)
    context.log.info("detections in held-out stored history: %s", edge.summary())
    decision = pg.gate(evaluation.labels, evaluation.predictions["tcn"], policy,
                       champion_pred=champion_pred, champion_version=found[1].version if found else None,
                       floor=config.floor, edge=edge.values, min_detections=config.min_detections)
    context.log.info("gate: %s (%s)", decision.alias, decision.reason)
    metrics = {**evaluation.metrics(), **decision.metrics(), "train_s": info["train_s"],
               "history_windows": info["history_windows"], "macro_f1": evaluation.macro_f1()}
    window = frozen.windows[0]
    example = pd.DataFrame(window, columns=["open", "high", "low", "close"])
    out = log_and_register(
        mlflow_resource=mlflow, market_db=market_db, required=REQUIRED_METRICS,
        experiment="pattern_tcn", run_name=name,
        tags=run_tags(context, "pattern_tcn", "any", None),
        version_tags={"tp.config": json.dumps(cfg.to_dict(), sort_keys=True), "tp.block_len": "1",
                      "tp.frozen_set": f"{len(frozen)} windows, seeds {list(frozen.stream)}"},
        flavor="tcn", model=model, registered_name=name, target=target,
        params={**{k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in cfg.to_dict().items()},
                "history_series": len(history)},
        metrics=metrics, example=example,
        predict_example=pd.DataFrame(model.predict_proba([window]), columns=list(model.classes)),
        plot=lambda path: str(pe.plot_confusion(evaluation, path)), decision=decision,
        artifacts={"scores": evaluation.scores, "history_labels": info["history_labels"],
                   "held_out_detections": edge.summary(),
                   "losses": {"per_epoch": info["losses"]}})
    return result(out, metrics, list(REQUIRED_METRICS), {
        "macro_f1": evaluation.macro_f1(), "labeler_macro_f1": evaluation.macro_f1("labeler"),
        "scores": MetadataValue.json(evaluation.scores), "train_s": round(info["train_s"], 1), "target": target,
        "held_out_detections": MetadataValue.json(edge.summary())})


pattern_assets = [pattern_tcn]

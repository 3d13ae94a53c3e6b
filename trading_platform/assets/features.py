"""The `features` asset: model-ready technical features of every stored timeframe.

Partitioned like the OHLCV it reads (symbol x month). A run replaces its months
in the ``features`` table, so re-materializing is idempotent. It continues from
the state stored with the last feature row before its first month (recursions,
OBV, the all-time high) and reads only its months' candles plus a tail of
``max_window`` candles, so its cost does not depend on how many years precede
it. It computes from the first stored candle only when that state is missing or
stale (the previous month was never materialized, or candles before it were
revised since) or when asked (``full_recompute``); the metadata says which.
"""

from typing import List

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import model_validator

from ..features.spec import FeatureSpec
from ..resources import MarketDB
from .market_data import market_assets
from .partitions import market_backfill_policy, market_partitions, month_bounds, split_keys

FEATURES_KEY = AssetKey(["features"])
_DEFAULT = FeatureSpec()


class FeaturesConfig(Config):
    """Indicators and windows (see trading_platform/features/spec.py); defaults are the standard set."""

    returns: List[int] = list(_DEFAULT.returns)
    volatility: List[int] = list(_DEFAULT.volatility)
    sma: List[int] = list(_DEFAULT.sma)
    ema: List[int] = list(_DEFAULT.ema)
    rsi: List[int] = list(_DEFAULT.rsi)
    macd: List[List[int]] = [list(x) for x in _DEFAULT.macd]
    bbands: List[List[float]] = [list(x) for x in _DEFAULT.bbands]
    atr: List[int] = list(_DEFAULT.atr)
    stoch: List[List[int]] = [list(x) for x in _DEFAULT.stoch]
    vwap: List[int] = list(_DEFAULT.vwap)
    volume_z: List[int] = list(_DEFAULT.volume_z)
    volume_spike: List[int] = list(_DEFAULT.volume_spike)
    change: List[int] = list(_DEFAULT.change)
    max_rise: List[int] = list(_DEFAULT.max_rise)
    obv: bool = True
    ath: bool = True
    candle: bool = True
    context: List[str] = list(_DEFAULT.context)
    full_recompute: bool = False  # recompute from the first stored candle even when the stored state is usable

    @model_validator(mode="after")
    def _valid(self):
        self.to_spec()  # a non-positive window fails here, naming the indicator
        return self

    def to_spec(self) -> FeatureSpec:
        d = {k: getattr(self, k) for k in FeatureSpec.__dataclass_fields__}
        d["bbands"] = [(int(n), float(k)) for n, k in d["bbands"]]
        return FeatureSpec.from_dict(d)


@asset(
    key=FEATURES_KEY,
    deps=[a.key for a in market_assets],
    partitions_def=market_partitions,
    backfill_policy=market_backfill_policy,
    check_specs=[
        AssetCheckSpec("rows_match_candles", asset=FEATURES_KEY, blocking=True,
                       description="one feature row per stored candle in the run's months"),
        AssetCheckSpec("values_finite", asset=FEATURES_KEY, blocking=True,
                       description="no infinite feature values (warm-up rows are null, never filled)"),
    ],
    kinds={"polars", "postgres"},
    group_name="features",
    description="Point-in-time technical features of every stored timeframe, with the next higher "
                "timeframe's features as of its last closed candle (htf_*).",
)
def features(context: AssetExecutionContext, config: FeaturesConfig, market_db: MarketDB) -> MaterializeResult:
    from ..errors import UnknownSymbol
    from ..features.pipeline import materialize
    from ..store.features import count_infinite

    spec = config.to_spec()
    reports, errors, checks_bad_rows, checks_inf, revisions_done = {}, [], {}, {}, {}
    with market_db.open() as store:
        for symbol, months in split_keys(context.partition_keys).items():
            info = store.get_symbol(symbol)
            if info is None:
                errors.append(UnknownSymbol(symbol).message)
                continue
            ranges = [month_bounds(m) for m in months]
            pending = pending_revisions(store.conn, symbol)  # what this run can see now (committed)
            rep = materialize(store, info, spec, ranges, full_recompute=config.full_recompute)
            revisions_done[symbol] = mark_revisions_done(store.conn, symbol, pending, ranges)
            reports[symbol] = rep
            for tf, n in rep["rows"].items():
                candles = sum(store.candle_stats(symbol, tf, a, b)["rows"] for a, b in ranges)
                if candles != n:
                    checks_bad_rows[f"{symbol} {tf}"] = {"candles": candles, "feature_rows": n}
            inf = count_infinite(store.conn, symbol, ranges[0][0], ranges[-1][1])
            if inf:
                checks_inf[symbol] = int(inf)
    if errors:
        raise Failure(description="; ".join(errors))
    md = {
        "rows": MetadataValue.json({s: r["rows"] for s, r in reports.items()}),
        "warmup_rows": MetadataValue.json({s: r["warmup_rows"] for s, r in reports.items()}),
        "feature_columns": max((r["columns"] for r in reports.values()), default=0),
        "gaps": MetadataValue.json({s: r["gaps"] for s, r in reports.items() if r["gaps"]}),
        "too_little_history": MetadataValue.json(
            {s: r["too_little_history"] for s, r in reports.items() if r["too_little_history"]}),
        "spec": MetadataValue.json(spec.to_dict()),
        "mode": MetadataValue.json({s: r["mode"] for s, r in reports.items()}),
        "candles_read": MetadataValue.json({s: r["rows_read"] for s, r in reports.items()}),
        "revisions_done": MetadataValue.json({s: n for s, n in revisions_done.items() if n}),
    }
    for s, r in reports.items():
        for tf, g in r["gaps"].items():
            context.log.warning("%s %s: %d missing candles in %d gaps (not bridged; windows span them)",
                                s, tf, g["missing"], g["gaps"])
        for tf, note in r["too_little_history"].items():
            context.log.info("%s %s: too little history: %s", s, tf, note)
    return MaterializeResult(metadata=md, check_results=[
        AssetCheckResult(check_name="rows_match_candles", passed=not checks_bad_rows,
                         severity=AssetCheckSeverity.ERROR, metadata={"mismatches": MetadataValue.json(checks_bad_rows)}),
        AssetCheckResult(check_name="values_finite", passed=not checks_inf, severity=AssetCheckSeverity.ERROR,
                         metadata={"rows_with_inf": MetadataValue.json(checks_inf)}),
    ])


def pending_revisions(conn, symbol: str) -> list[tuple]:
    """(id, timeframe, first_ts) of the symbol's revisions whose features are not recomputed yet, recorded as
    seen now (every state this run stores reflects them)."""
    from ..store.revisions import see_features_pending

    return see_features_pending(conn, symbol)


def mark_revisions_done(conn, symbol: str, pending: list[tuple], ranges: list) -> int:
    """Mark the revisions the run's months recomputed: from the run's first month on, when the months are one
    stretch and no stored features of that timeframe lie after it (they would still be stale)."""
    if not pending or any(b != c for (_, b), (c, _) in zip(ranges, ranges[1:])):
        return 0
    from ..store.features import has_features_from
    from ..store.revisions import mark_features_done

    lo, hi = ranges[0][0], ranges[-1][1]
    ids = [rid for rid, tf, first in pending
           if first >= lo and first < hi and not has_features_from(conn, symbol, tf, hi)]
    mark_features_done(conn, ids)
    return len(ids)


feature_assets = [features]

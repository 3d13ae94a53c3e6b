"""Stale features: when history changes under stored candles, recompute what depends on it.

Cumulative features (OBV, the all-time-high tracker) and every recursion depend
on all earlier candles, so a revision of old candles (recorded by the write path
in ``ohlcv_revisions``) makes every later feature partition of that symbol stale.
This sensor requests those partitions again; its cursor is the last revision id
seen, and run keys make a repeated tick harmless.
"""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from ..assets.features import FEATURES_KEY, features
from ..assets.partitions import market_key, month_key, month_partitions
from ..resources import MarketDB

features_job = define_asset_job("features_job", selection=[features],
                                description="Recompute stored features for chosen symbol-months.")
MAX_REVISIONS_PER_TICK = 500


def stale_partitions(revisions, materialized: set[str], months: list[str]) -> list[str]:
    """Feature partitions from each revised month on that were materialized before."""
    first_by_symbol: dict[str, str] = {}
    for _, symbol, first_ts in revisions:
        m = month_key(first_ts)
        first_by_symbol[symbol] = min(m, first_by_symbol.get(symbol, m))
    keys = []
    for symbol, first in sorted(first_by_symbol.items()):
        for m in months:
            key = str(market_key(symbol, m))
            if m >= first and key in materialized:
                keys.append(key)
    return keys


@sensor(job=features_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        description="Requests feature partitions made stale by revised candles (cursor: last revision id).")
def features_stale_sensor(context: SensorEvaluationContext, market_db: MarketDB):
    cursor = int(context.cursor or 0)
    with market_db.open() as store:
        revisions = store.conn.execute(
            "SELECT id, symbol, first_ts FROM ohlcv_revisions WHERE id > %s ORDER BY id LIMIT %s",
            (cursor, MAX_REVISIONS_PER_TICK),
        ).fetchall()
    if not revisions:
        return SkipReason("no revised candles since the last tick")
    last_id = revisions[-1][0]
    materialized = {str(k) for k in context.instance.get_materialized_partitions(FEATURES_KEY)}
    keys = stale_partitions(revisions, materialized, month_partitions.get_partition_keys())
    return SensorResult(
        run_requests=[RunRequest(run_key=f"revision-{last_id}|{k}", partition_key=k) for k in keys],
        cursor=str(last_id),
    )

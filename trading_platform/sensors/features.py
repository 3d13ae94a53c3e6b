"""Stale features: when history changes under stored candles, recompute what depends on it.

Cumulative features (OBV, the all-time-high tracker) and every recursion depend
on all earlier candles, so a revision of old candles (recorded by the write path
in ``ohlcv_revisions``) makes every later stored feature month of that symbol
stale. This sensor requests one run per revised symbol covering its revised
range: from the revised month to the symbol's last stored feature month (a
partition range, so the run continues from the state before the revision once
and computes the months in order). It reads only the new revisions and one
index look-up per revised symbol; its cursor is the last revision id seen, and
run keys make a repeated tick harmless.
"""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    sensor,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ..assets.features import features
from ..assets.partitions import market_key, month_key
from ..resources import MarketDB

features_job = define_asset_job("features_job", selection=[features], executor_def=in_process_executor,
                                description="Recompute stored features for chosen symbol-months.")
MAX_REVISIONS_PER_TICK = 500


def stale_ranges(store, revisions) -> dict[str, tuple[str, str]]:
    """symbol -> (first, last) month of its stored features made stale by the revisions."""
    first_by_symbol: dict[str, str] = {}
    for _, symbol, first_ts in revisions:
        m = month_key(first_ts)
        first_by_symbol[symbol] = min(m, first_by_symbol.get(symbol, m))
    out = {}
    for symbol, first in sorted(first_by_symbol.items()):
        last_ts = store.conn.execute("SELECT max(ts) FROM features WHERE symbol = %s", (symbol,)).fetchone()[0]
        if last_ts is not None and month_key(last_ts) >= first:
            out[symbol] = (first, month_key(last_ts))
    return out


def range_tags(symbol: str, first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: str(market_key(symbol, first)),
            ASSET_PARTITION_RANGE_END_TAG: str(market_key(symbol, last))}


@sensor(job=features_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        description="One run per symbol whose candles were revised, recomputing its stored features from the "
                    "revised month on (cursor: last revision id).")
def features_stale_sensor(context: SensorEvaluationContext, market_db: MarketDB):
    cursor = int(context.cursor or 0)
    with market_db.open() as store:
        revisions = store.conn.execute(
            "SELECT id, symbol, first_ts FROM ohlcv_revisions WHERE id > %s ORDER BY id LIMIT %s",
            (cursor, MAX_REVISIONS_PER_TICK),
        ).fetchall()
        if not revisions:
            return SkipReason("no revised candles since the last tick")
        ranges = stale_ranges(store, revisions)
    last_id = revisions[-1][0]
    return SensorResult(
        run_requests=[RunRequest(run_key=f"revision-{last_id}|{s}", tags={**range_tags(s, a, b), "symbol": s})
                      for s, (a, b) in ranges.items()],
        cursor=str(last_id),
    )

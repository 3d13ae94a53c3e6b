"""Stale features and outputs: when history changes under stored candles, recompute what depends on it.

Cumulative features (OBV, the all-time-high tracker) and every recursion depend on all earlier candles,
so a revision of old candles (recorded by the write paths in ``ohlcv_revisions``) makes every later stored
feature month of that symbol stale, and the model outputs that read the revised candles with it. This
sensor requests one run per revised symbol covering its revised range: from the revised month to the
symbol's last stored feature month (a partition range, so the run continues from the state before the
revision once and computes the months in order), then the outputs of that range, which correct what the
revision changed (``assets/predictions.py``) and fill any gap.

Revisions are read by state, never by id: an id is taken when a row is written but visible only at commit,
so a long transaction (a live batch, ``tp ingest``) commits a lower id after a higher one, which an id
cursor skips for good. The sensor asks for every revision whose features are not done
(``features_done_at``) and not requested in the last ``RETRY_AFTER`` (``features_requested_at``, set by
the tick); the features run marks them done once their months are recomputed. Run keys make a repeated
tick harmless; a run that failed is asked for again after ``RETRY_AFTER``.
"""

from datetime import timedelta

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
from ..assets.predictions import output_assets
from ..assets.watchdog import without_watchdog_checks
from ..resources import MarketDB

features_job = define_asset_job("features_job", selection=without_watchdog_checks([features]), executor_def=in_process_executor,
                                description="Recompute stored features for chosen symbol-months.")
revisions_job = define_asset_job(
    "revisions_job", selection=without_watchdog_checks([features, *output_assets]), executor_def=in_process_executor,
    description="After revised candles: recompute a symbol's features from the revised month on, then correct "
                "the model outputs the revision changed.")
MAX_REVISIONS_PER_TICK = 500
RETRY_AFTER = timedelta(hours=1)


def stale_ranges(store, revisions) -> dict[str, tuple[str, str]]:
    """symbol -> (first, last) month of its stored features made stale by the revisions."""
    from ..store.features import last_feature_ts

    first_by_symbol: dict[str, str] = {}
    for _, symbol, first_ts in revisions:
        m = month_key(first_ts)
        first_by_symbol[symbol] = min(m, first_by_symbol.get(symbol, m))
    out = {}
    for symbol, first in sorted(first_by_symbol.items()):
        last_ts = last_feature_ts(store.conn, symbol)
        if last_ts is not None and month_key(last_ts) >= first:
            out[symbol] = (first, month_key(last_ts))
    return out


def range_tags(symbol: str, first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: str(market_key(symbol, first)),
            ASSET_PARTITION_RANGE_END_TAG: str(market_key(symbol, last))}


@sensor(job=revisions_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        description="One run per symbol whose candles were revised: its stored features from the revised month "
                    "on, then the outputs the revision changed (revisions claimed by state, not by id).")
def features_stale_sensor(context: SensorEvaluationContext, market_db: MarketDB):
    from ..store.revisions import claim_for_features, mark_features_done, mark_features_requested

    with market_db.open() as store, store.conn.transaction():
        revisions = claim_for_features(store.conn, RETRY_AFTER, MAX_REVISIONS_PER_TICK)
        if not revisions:
            return SkipReason("no revised candles waiting for their features")
        ranges = stale_ranges(store, revisions)
        ids = [r[0] for r in revisions]
        # a symbol with no stored features from the revised month on has nothing stale: done
        done = [r[0] for r in revisions if r[1] not in ranges]
        mark_features_done(store.conn, done)
        at = mark_features_requested(store.conn, ids)
    by_symbol: dict[str, list[int]] = {}
    for rid, symbol, _ in revisions:
        by_symbol.setdefault(symbol, []).append(rid)
    return SensorResult(run_requests=[
        RunRequest(run_key=f"revisions-{min(by_symbol[s])}-{max(by_symbol[s])}-{len(by_symbol[s])}|{s}|"
                           f"{at.timestamp():.0f}",
                   tags={**range_tags(s, a, b), "symbol": s, "tp/revisions": str(len(by_symbol[s]))})
        for s, (a, b) in ranges.items()])

"""Market data: ingested OHLCV and its resampled higher timeframes, with checks.

``market/ohlcv`` fetches each symbol's *base* timeframe (the finest in its
``timeframes``) from the configured source, incrementally: only what the store
lacks for the partition's month. ``market/ohlcv_<tf>`` builds each higher
timeframe a symbol lists from the next finer stored one, closed candles only.
"""


from datetime import datetime, timedelta, timezone

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

from ..core.timeframes import RESAMPLED, TIMEFRAMES
from ..resources import MarketDB, MarketSource
from .partitions import market_backfill_policy, market_partitions, month_bounds, split_keys

GROUP = "market_data"
OHLCV_KEY = AssetKey(["market", "ohlcv"])
# resampled chain (RESAMPLED): each reads the coarsest listed timeframe below it that divides it
US = 1_000_000


def _check_specs(key: AssetKey) -> list[AssetCheckSpec]:
    from ..core.quality import CHECKS

    return [AssetCheckSpec(name, asset=key, blocking=blocking, description=desc)
            for name, (_, blocking, desc) in CHECKS.items()]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _check_results(store, series: dict, now: datetime) -> list[AssetCheckResult]:
    """Run the quality checks over what the run touched: {(symbol, tf): (info, start, end)}."""
    from ..core.quality import run_checks

    candles, latest = {}, {}
    for (symbol, tf), (info, start, end) in series.items():
        candles[(symbol, tf)] = (store.read_candles(symbol, tf, start, end), info.category, info.exchange, info.live)
        if info.live:
            last = store.candle_stats(symbol, tf)["last_ts"]
            if last is not None:
                latest[(symbol, tf)] = int((last.timestamp() + TIMEFRAMES[tf]) * US)
    outcomes = run_checks(candles, TIMEFRAMES, now_us=int(now.timestamp() * US), latest_close_us=latest)
    return [
        AssetCheckResult(
            check_name=o.name, passed=o.passed,
            severity=AssetCheckSeverity.ERROR if o.severity == "ERROR" else AssetCheckSeverity.WARN,
            description=o.description, metadata={k: _md(v) for k, v in o.metadata.items()},
        )
        for o in outcomes
    ]


def _md(v):
    if isinstance(v, dict):
        return MetadataValue.json(v)
    return v


def _summary_metadata(store, series: dict, totals, extra: dict) -> dict:
    first = last = None
    stored = 0
    for (symbol, tf), (_, start, end) in series.items():
        st = store.candle_stats(symbol, tf, start, end)
        stored += st["rows"]
        if st["first_ts"] is not None:
            first = st["first_ts"] if first is None else min(first, st["first_ts"])
            last = st["last_ts"] if last is None else max(last, st["last_ts"])
    md = {
        "stored_rows": stored,
        "inserted": totals.inserted,
        "updated": totals.updated,
        "unchanged": totals.unchanged,
        "rejected": totals.rejected,
        "duplicates_collapsed": totals.duplicates_collapsed,
        "first_ts": first.isoformat() if first else "",
        "last_ts": last.isoformat() if last else "",
        "series": MetadataValue.json(sorted(f"{s} {tf}" for s, tf in series)),
    }
    md.update(extra)
    return md


def _run_symbols(context, store, errors: list):
    """(symbol info, months) for each symbol of the run; unknown symbols go to errors."""
    from ..errors import UnknownSymbol

    for symbol, months in split_keys(context.partition_keys).items():
        info = store.get_symbol(symbol)
        if info is None:
            errors.append(UnknownSymbol(symbol).message)
            continue
        yield info, months


def _finish(context, store, series, totals, now, errors, extra) -> MaterializeResult:
    """Checks and metadata over what the run touched; a run with errors fails loudly
    (after storing and reporting the partitions that worked)."""
    if errors and not series:
        raise Failure(description="; ".join(errors))
    checks = _check_results(store, series, now)
    md = _summary_metadata(store, series, totals, extra)
    if errors:
        context.log.error("; ".join(errors))
        raise Failure(description="; ".join(errors), metadata=md)
    return MaterializeResult(metadata=md, check_results=checks)


class OhlcvConfig(Config):
    refetch: bool = False  # fetch whole months again (corrections), not only what is missing
    # an ISO time: fetch nothing after it (tp demo pins its sample to the start of the day, so a demo run twice in a
    # day trains on the same candles); empty: up to now
    until: str = ""


def _missing_ranges(store, info, tf, start, end, refetch):
    """What the store lacks of [start, end): the part before the first stored candle and the part
    after the last one, each only if the market trades in it."""
    from ..core.calendars import open_between

    if refetch:
        return [(start, end)]
    st = store.candle_stats(info.symbol, tf, start, end)
    if st["rows"] == 0:
        return [(start, end)]
    step = timedelta(seconds=TIMEFRAMES[tf])
    ranges = []
    if st["first_ts"] > start:
        ranges.append((start, st["first_ts"]))
    if st["last_ts"] + step < end:
        ranges.append((st["last_ts"] + step, end))
    return [(a, b) for a, b in ranges
            if open_between(info.category, info.exchange, int(a.timestamp() * US), int(b.timestamp() * US),
                            TIMEFRAMES[tf])]


@asset(
    key=OHLCV_KEY,
    partitions_def=market_partitions,
    backfill_policy=market_backfill_policy,
    check_specs=_check_specs(OHLCV_KEY),
    kinds={"postgres"},
    group_name=GROUP,
    description="Candles at each symbol's base timeframe, fetched incrementally from the configured source.",
)
def ohlcv(context: AssetExecutionContext, config: OhlcvConfig, market_db: MarketDB,
          market_source: MarketSource) -> MaterializeResult:
    from ..errors import PlatformError
    from ..store.db import WriteResult

    source = market_source.build()
    now = _now()
    if config.until:
        from ..core.timeframes import parse_time

        now = min(now, parse_time(config.until, "until"))
    totals, series, fetched, errors = WriteResult(), {}, 0, []
    with market_db.open() as store:
        for info, months in _run_symbols(context, store, errors):
            symbol = info.symbol
            if not info.enabled:
                context.log.info("%s is disabled; fetching anyway because the partition was asked for", symbol)
            tf = info.base_timeframe
            first_start = month_bounds(months[0])[0]
            for month in months:
                start, end = month_bounds(month)
                end = min(end, now)
                if end <= start:
                    continue
                for a, b in _missing_ranges(store, info, tf, start, end, config.refetch):
                    try:
                        raw = source.fetch(info, tf, a, b)
                    except PlatformError as e:
                        errors.append(f"{symbol} {month}: {e.message}")
                        continue
                    fetched += len(raw)
                    r = store.ingest_frame(symbol, tf, raw, source=source.name, now=now, forming="skip",
                                           where=f"{source.name} {symbol} {tf}")
                    totals = totals + r
                    context.log.info("%s %s %s..%s: %s", symbol, tf, a.isoformat(), b.isoformat(), r.counts())
            series[(symbol, tf)] = (info, first_start, month_bounds(months[-1])[1])
        return _finish(context, store, series, totals, now, errors, {
            "source": getattr(source, "last_used", None) or source.name,
            "fetched_rows": fetched,
            "forming_skipped": totals.forming_skipped,
        })


def _resampled_asset(tf: str, parent: AssetKey):
    key = AssetKey(["market", f"ohlcv_{tf}"])

    @asset(
        name=f"ohlcv_{tf}",
        key_prefix=["market"],
        deps=[parent],
        partitions_def=market_partitions,
        backfill_policy=market_backfill_policy,
        check_specs=_check_specs(key),
        kinds={"postgres"},
        group_name=GROUP,
        description=f"{tf} candles resampled from the next finer stored timeframe (closed candles only), "
                    f"for symbols that list {tf} above their base timeframe.",
    )
    def _asset(context: AssetExecutionContext, market_db: MarketDB) -> MaterializeResult:
        from ..core.calendars import slot_open
        from ..core.resample import resample
        from ..store.db import WriteResult

        now = _now()
        tf_s = TIMEFRAMES[tf]
        totals, series, skipped, errors = WriteResult(), {}, [], []
        incomplete, incomplete_at = 0, {}
        with market_db.open() as store:
            for info, months in _run_symbols(context, store, errors):
                symbol = info.symbol
                lower = info.resample_source(tf)
                if lower is None:
                    skipped.append(symbol)
                    continue
                for month in months:
                    start, end = month_bounds(month)
                    lower_c = store.read_candles(symbol, lower, start, end)
                    out = resample(
                        lower_c, TIMEFRAMES[lower], tf_s, now_us=int(now.timestamp() * US),
                        market_open=lambda ts, s, info=info: slot_open(info.category, info.exchange, ts, s),
                    )
                    if out.incomplete:
                        incomplete += out.incomplete
                        incomplete_at.setdefault(symbol, datetime.fromtimestamp(
                            out.incomplete_first_ts / US, timezone.utc).isoformat())
                    totals = totals + store.write_candles(symbol, tf, out.candles, source=f"resample:{lower}")
                series[(symbol, tf)] = (info, month_bounds(months[0])[0], month_bounds(months[-1])[1])
            if incomplete:
                context.log.warning("%d %s bucket(s) not written: a lower-timeframe candle is missing while the "
                                    "market was open (first: %s); a later run writes them once the candles arrive",
                                    incomplete, tf, incomplete_at)
            return _finish(context, store, series, totals, now, errors, {
                "skipped_symbols": MetadataValue.json(skipped),
                "note": f"symbols without {tf} above their base timeframe are skipped" if skipped else "",
                "incomplete_buckets": incomplete,
                "incomplete_first": MetadataValue.json(incomplete_at),
            })

    return _asset


resampled_assets = []
_parent = OHLCV_KEY
for _tf in RESAMPLED:
    _a = _resampled_asset(_tf, _parent)
    resampled_assets.append(_a)
    _parent = _a.key

market_assets = [ohlcv, *resampled_assets]

"""One live batch: features, every pinned version, rows written and events marked done, in one transaction.

For each event (a closed candle of a live symbol): the higher timeframes the candle completes are
resampled and written through the live path (their events join this batch); the features of the new
candles are computed incrementally from the stored state, coarsest timeframe first so a finer one joins
its context; then every pinned version that applies to the symbol and timeframe scores the candle and
what it changed (classifiers and regime into ``predictions``, NHITS into ``forecasts``, the TCN into
``patterns``, champions and shadows): the same rule as every other path (``scoring.correction_spans``),
so a new candle at the end is scored alone, and an updated or late candle supersedes the later outputs
whose value it changed. The revisions the live writes recorded are marked corrected, the events done, the
outputs written (``OutputWriter.flush``: their ``known_at`` is taken there) and the batch closed with its
commit record, all in one transaction: a run killed at any point leaves nothing half-done, and the retry
does the whole batch.

Attempts of one batch are serialized by a row lock on the batch, and a run only does the events still
``claimed`` by it: a second run of a committed batch (a retry that raced a slow first attempt) finds
nothing to do and writes nothing, so no event is ever marked done twice. Runs for the same symbol are
serialized by an advisory lock per symbol (taken in symbol order: no deadlock).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from ..core.timeframes import TIMEFRAMES
from ..store import outbox
from ..store.outbox import CONSUMER

US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _us(ts) -> int:
    if getattr(ts, "tzinfo", None) is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return (ts - EPOCH) // timedelta(microseconds=1)


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def batch_versions(store, batch_id: int, pins: dict, client_factory=None) -> list:
    """The pinned versions with their tags: from the batch row the sensor wrote (no registry call), or
    from the registry when the row is gone or pins something else (a run launched by hand)."""
    from ..models.scoring import Version, from_pins

    row = outbox.batch_pins(store.conn, batch_id)
    if row is not None and _norm(row[0]) == _norm(pins):
        return [Version(d["name"], str(d["version"]), d["role"], dict(d.get("tags") or {})) for d in row[1]]
    if client_factory is None:
        raise RuntimeError(f"batch {batch_id}: no stored versions for the pins {pins} and no registry client")
    return from_pins(client_factory(), pins)


def _norm(pins: dict) -> dict:
    return {str(n): {str(r): str(v) for r, v in roles.items()} for n, roles in (pins or {}).items()}


def process_batch(store, server, batch_id: int, event_ids: list[int], pins: dict, *, run_id: str,
                  attempt: int = 1, client_factory=None, log=None, before_commit=None,
                  consumer: str = CONSUMER, params=None) -> dict:
    """Do one batch (see the module doc); returns what was done."""
    import logging

    from ..features.pipeline import update_latest  # noqa: F401 (imported before the transaction)
    from ..models.scoring import Params

    log = log or logging.getLogger(__name__)
    params = params or Params()
    conn = store.conn
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    first = outbox.claimed_events(conn, event_ids, batch_id, consumer, lock=False)
    if not first:
        log.info("batch %s: every event is done already; nothing to do", batch_id)
        return {"events_done": 0, "already_done": True, "rows": {}, "models_loaded": 0}
    versions = batch_versions(store, batch_id, pins, client_factory)
    # load what the events need before taking any lock (a first load may fetch artifacts)
    infos = {s: store.get_symbol(s) for s in sorted({e[1] for e in first})}
    loaded = set()
    for v in versions:
        if any(info is not None and _reachable(info, tf) & set(v.timeframes(info))
               for info, tf in ((infos[e[1]], e[2]) for e in first)):
            server.load(v.name, version=v.version)
            loaded.add((v.name, v.version))
    timings["load_models_s"] = time.perf_counter() - t0

    from ..store.outputs import OutputWriter, claim_series

    writer = OutputWriter(conn, versions, "live")
    touched: dict[tuple[str, str], list[datetime]] = {}  # the batch's candles per series, for the alerts
    rows_written: dict[str, int] = {}
    skipped: list[str] = []
    derived_ids: list[int] = []
    t_lock = time.perf_counter()
    with conn.transaction():
        if not outbox.lock_batch(conn, batch_id):
            raise RuntimeError(f"batch {batch_id} does not exist")
        # what is still to do, now that we hold it
        events = outbox.claimed_events(conn, event_ids, batch_id, consumer, lock=True)
        if not events:
            log.info("batch %s: committed by another attempt meanwhile; nothing to do", batch_id)
            return {"events_done": 0, "already_done": True, "rows": {}, "models_loaded": len(loaded)}
        by_symbol: dict[str, list[tuple[int, str, datetime]]] = {}
        for eid, symbol, tf, ts in events:
            by_symbol.setdefault(symbol, []).append((eid, tf, ts))
        t_feat = t_score = 0.0
        deferred: dict = {}
        t_lock = time.perf_counter() - t_lock
        for symbol in sorted(by_symbol):
            t = time.perf_counter()
            outbox.lock_symbol(conn, symbol)
            t_lock += time.perf_counter() - t
            info = store.get_symbol(symbol)
            if info is None or not (info.enabled and info.live):
                skipped.append(symbol)
                log.warning("batch %s: %s is %s: its %d event(s) are closed without predictions (the schedules "
                            "predict symbols that are not live)", batch_id, symbol,
                            "gone" if info is None else "not live" if info.enabled else "disabled",
                            len(by_symbol[symbol]))
                continue
            evs = by_symbol[symbol]
            t = time.perf_counter()
            new = resample_completed(store, info, [(tf, ts) for _, tf, ts in evs], batch_id, consumer)
            derived_ids += [eid for eid, _, _ in new]
            evs = evs + new
            by_tf: dict[str, set[int]] = {}
            for _, tf, ts in evs:
                by_tf.setdefault(tf, set()).add(_us(ts))
            for tf, stamps in by_tf.items():
                touched[(symbol, tf)] = [_dt(u) for u in sorted(stamps)]
            for tf in sorted(by_tf, key=TIMEFRAMES.__getitem__, reverse=True):  # coarsest first: context
                refresh_features(store, info, tf, min(by_tf[tf]))
                claim_series(conn, symbol, tf, "live", _dt(min(by_tf[tf])))
            t_feat += time.perf_counter() - t
            t = time.perf_counter()
            score_candles(store, server, versions, info, by_tf, params, loaded, writer, deferred)
            mark_live_revisions(conn, symbol, by_tf)
            t_score += time.perf_counter() - t
        t = time.perf_counter()
        score_deferred(store, server, deferred, writer)  # every symbol's forecasts in one call
        t_score += time.perf_counter() - t
        timings.update(features_s=t_feat, score_s=t_score, lock_s=t_lock)
        t_mark = time.perf_counter()
        all_ids = [e[0] for e in events] + derived_ids
        done_ids = outbox.mark_done(conn, batch_id, all_ids, consumer)
        t_write = time.perf_counter()
        for table, got in writer.flush().items():  # known_at is taken here, at the batch's last writes
            rows_written[table] = got["inserted"]
            if got["superseded"]:
                rows_written[f"{table}_superseded"] = got["superseded"]
        timings["write_s"] = time.perf_counter() - t_write
        t_alerts = time.perf_counter()
        alerts = _evaluate_alerts(conn, touched, writer.alerts)
        timings["alerts_s"] = time.perf_counter() - t_alerts
        remaining = outbox.not_done(conn, batch_id, consumer)
        timings["mark_s"] = time.perf_counter() - t_mark - timings["write_s"] - timings["alerts_s"]
        timings["total_s"] = time.perf_counter() - t0
        stats = {"models_loaded": len(loaded), "rows": rows_written, "derived": len(derived_ids), "alerts": alerts,
                 "skipped_symbols": skipped, **{k: round(v, 4) for k, v in timings.items()}}
        outbox.commit_batch(conn, batch_id, run_id, attempt, remaining, done_ids, stats, consumer)
        if before_commit is not None:
            before_commit()
    return {"events_done": len(done_ids), "already_done": False, "derived_events": len(derived_ids),
            "rows": rows_written, "skipped_symbols": skipped, "models_loaded": len(loaded),
            "versions": len(versions), **{k: round(v, 3) for k, v in timings.items()}}


def _evaluate_alerts(conn, touched: dict, made: dict) -> dict:
    """The alerts of the batch's series judged on its candles, in its transaction (a candle at or before an alert's
    last applied one re-judges it: a correction); what the flush made (``made``) is reported beside."""
    from ..alerts.core import evaluate

    if not touched:
        return dict(made)
    got = evaluate(conn, series=sorted(touched), revised=touched, scheduled=False)
    # what the flush made (alerts, suppressed, retracted, deliveries) and what the judging did (series judged,
    # resolved, re-judged, resolution_deliveries), every count, zeros included
    return {**made, "judged_series": got["series"], "judged": got["judged"], "resolved": got["resolved"],
            "rejudged": got["rejudged"], "resolution_deliveries": got["deliveries"]}


def _reachable(info, tf: str) -> set[str]:
    """tf and the listed timeframes resampled (directly or not) from it: what an event of tf can touch."""
    out, frontier = {tf}, [tf]
    while frontier:
        lower = frontier.pop()
        for t in info.timeframes:
            if t not in out and info.resample_source(t) == lower:
                out.add(t)
                frontier.append(t)
    return out


def resample_completed(store, info, events: list[tuple[str, datetime]], batch_id: int, consumer: str
                       ) -> list[tuple[int, str, datetime]]:
    """Higher timeframes whose bucket the event candles complete: resampled from the stored lower candles
    (the same rule as the resampling assets: a bucket is written only when complete and ended), written
    through ``tp_live_candle`` (source ``resample:<lower>``), and their events claimed into this batch.
    Chains upwards (5m -> 15m -> 1h ...). Returns the new events (id, timeframe, ts)."""
    from ..core.calendars import slot_open
    from ..core.resample import resample

    now_us = _us(datetime.now(timezone.utc))
    todo = sorted({(tf, _us(ts)) for tf, ts in events}, key=lambda x: (TIMEFRAMES[x[0]], x[1]))
    seen: set[tuple[str, int]] = set()
    out = []
    while todo:
        tf, ts = todo.pop(0)
        for child in info.timeframes:
            if info.resample_source(child) != tf:
                continue
            step = TIMEFRAMES[child] * US
            b = ts // step * step
            if (child, b) in seen or b + step > now_us:
                continue
            seen.add((child, b))
            lower = store.read_candles(info.symbol, tf, _dt(b), _dt(b + step))
            res = resample(lower, TIMEFRAMES[tf], TIMEFRAMES[child], now_us=now_us,
                           market_open=lambda slots, s: slot_open(info.category, info.exchange, slots, s))
            if len(res.candles) != 1:
                continue
            c = res.candles
            ev = outbox.write_derived_candle(
                store.conn, info.symbol, child, _dt(b), float(c.open[0]), float(c.high[0]), float(c.low[0]),
                float(c.close[0]), float(c.volume[0]), f"resample:{tf}", batch_id, consumer)
            if ev is None:
                continue
            out.append((ev, child, _dt(b)))
            todo.append((child, b))
            todo.sort(key=lambda x: (TIMEFRAMES[x[0]], x[1]))
    return out


def refresh_features(store, info, tf: str, first_us: int) -> None:
    """Features of the new candles of one series, continued from the stored state. A candle at or before
    the newest feature row (a correction, a late candle) first drops the rows from it on, so they are
    recomputed from the state before it."""
    from ..features.pipeline import update_latest
    from ..store.features import delete_features_from, last_feature_ts

    newest = last_feature_ts(store.conn, info.symbol, tf)
    if newest is not None and _us(newest) >= first_us:
        delete_features_from(store.conn, info.symbol, tf, _dt(first_us))
    update_latest(store, info, tf)


def mark_live_revisions(conn, symbol: str, by_tf: dict[str, set[int]]) -> None:
    """The revisions ``tp_live_candle`` recorded for this batch's updated candles: their features and outputs
    were redone here, in this transaction, so no other path redoes them."""
    from ..store.revisions import mark_live_done

    for tf, wanted in by_tf.items():
        mark_live_done(conn, symbol, tf, [_dt(u) for u in wanted])


def score_candles(store, server, versions, info, by_tf: dict[str, set[int]], params, loaded: set, writer,
                  deferred: dict | None = None) -> None:
    """Every version that applies to the symbol, over what the event candles ``{timeframe: {ts}}`` may have
    changed (the candles themselves, and for an updated or late one the later rows that read it), into
    ``writer``. Forecasters go into ``deferred`` when given (``score_deferred`` runs each once for all the
    batch's symbols)."""
    from ..models.scoring import correction_spans, score_range, scope

    revisions = [(tf, _dt(a), _dt(b)) for tf, wanted in by_tf.items() for a, b in _adjacent_runs(tf, wanted)]
    for v, tf, lo, hi in correction_spans(store, server, versions, info, revisions, params):
        loaded.add((v.name, v.version))
        if deferred is not None and v.table == "forecasts":
            deferred.setdefault((v.name, v.version, v.role), (v, []))[1].append((info, tf, lo, hi))
            continue
        seen: dict = {}
        rows = score_range(store, server, v, info, tf, lo, hi, params, seen)
        writer.add(v.table, rows, scope=scope(v, info, tf, lo, hi, seen))


def _adjacent_runs(tf: str, wanted: set[int]) -> list[tuple[int, int]]:
    """The candles as (first, last) stretches of adjacent candles: a batch of new candles is one revision of the
    series (one window to look up per version), not one per candle."""
    step, out = TIMEFRAMES[tf] * US, []
    for u in sorted(wanted):
        if out and u - out[-1][1] <= step:
            out[-1][1] = u
        else:
            out.append([u, u])
    return [(a, b) for a, b in out]


def score_deferred(store, server, deferred: dict, writer) -> None:
    """The deferred forecasters, each in one call over every symbol it was deferred for."""
    from ..models.scoring import forecast_many, scope

    for v, items in deferred.values():
        model = server.load(v.name, version=v.version)
        rows = forecast_many(store, v, model.model, items)
        writer.add(v.table, rows)
        last: dict = {}
        for r in rows:
            last[(r[2], r[3])] = max(last.get((r[2], r[3]), r[4]), r[4])
        for info, tf, lo, hi in items:
            writer.add(v.table, [], scope=scope(v, info, tf, lo, hi, {"last": last.get((info.symbol, tf))}))

"""`tp live`: the live path's backlog, and a feeder of closed candles."""

from __future__ import annotations

from ..api import live as api
from ._base import Parser, emit, stderr_log


def cmd_status(args) -> int:
    st = api.status()
    lat = st["latency_last_hour_s"]
    err = st["last_error"]
    text = "\n".join([
        f"backlog: {st['backlog']} events not yet predicted ({st['pending']} pending, {st['claimed']} in "
        f"{st['batches_in_flight']} batch(es) in flight); oldest {st['lag_s']:.1f} s old",
        f"batches retried: {st['batches_retried']} ({st['retries']} re-requests)",
        f"last hour: {st['done_last_hour']} events predicted"
        + (f", insert to prediction p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s, max {lat['max']:.2f} s"
           if lat else ""),
        f"last error: batch {err['batch']} at {err['at']}: {err['error']}" if err else "last error: none",
        *_collector_lines(st.get("collector") or []),
    ])
    emit(args, st, text)
    return 0


def _collector_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["collector: no status (`tp live collect` has not run)"]
    out = ["collector:"]
    for r in rows:
        if r["kind"] == "connection":
            out.append(f"  {r['name']}: {r['state']}, {r['frames']} frames, {r['reconnects']} reconnects, "
                       f"{r['gap_candles']} gap candles fetched" + (f"; last error: {r['last_error']}"
                                                                    if r["last_error"] else ""))
        else:
            lag = f", lag {r['lag_s']:.1f} s" if r["lag_s"] is not None else ""
            out.append(f"  {r['exchange']} {r['name']}: {r['state']}, last candle {r['last_candle_ts'] or '-'}{lag}, "
                       f"{r['candles_written']} written, {r['gap_candles']} gap candles"
                       + (f"; last error: {r['last_error']}" if r["last_error"] else ""))
    return out


def cmd_collect(args) -> int:
    d = api.collect(once=args.once, exchanges=args.exchange, duration=args.duration)
    text = (f"{d['series']} series, {d['written']} candles written ({d['gap_candles']} fetched over REST)"
            + "".join(f"\nskipped {k}: {v}" for k, v in d["skipped"].items())
            + "".join(f"\nerror {k}: {v}" for k, v in d["errors"].items()))
    emit(args, d, text)
    return 1 if d["errors"] else 0  # a series whose fetch or write failed (--once: a check that failed)


def cmd_feed(args) -> int:
    d = api.feed(args.symbols or "", args.rate, duration=args.duration, count=args.count, timeframe=args.timeframe,
                 file=args.file, source=args.source, start=args.start, log=stderr_log, replay=args.replay)
    emit(args, d, f"fed {d['fed']} candles ({d['events']} live events) in {d['duration_s']} s "
                  f"({d['rate']} candles/s): " + " ".join(f"{k}={v}" for k, v in d["written"].items()))
    return 0


def cmd_runner(args) -> int:
    """The deployed warm process of live runs (docker/compose.yaml's live_runner; see live/prefork.py)."""
    from ..errors import InvalidInput
    from ..live.prefork import DEFAULT_JOBS, DEFAULT_PRELOAD, parse_address, request

    address = args.ping or args.listen
    if not address:
        raise InvalidInput("give --listen HOST:PORT (serve) or --ping HOST:PORT (check a runner)", field="--listen")
    try:
        parse_address(address)
    except ValueError as e:
        raise InvalidInput(str(e), field="--ping" if args.ping else "--listen") from None
    if args.ping:
        try:
            reply = request(address, {"op": "ping"}, timeout=5)
        except OSError as e:
            emit(args, {"ok": False, "error": str(e)}, f"live runner {address}: unreachable ({e})")
            return 1
        emit(args, reply, f"live runner {address}: pid {reply.get('pid')}, {reply.get('runs')} run(s) in flight")
        return 0 if reply.get("ok") else 1
    from ..instance import get_instance

    get_instance().dispose()  # a DAGSTER_HOME that holds the deployment's instance, or a clear error, before warm-up
    jobs = [j for j in (args.jobs or "").split(",") if j] or DEFAULT_JOBS
    preload = DEFAULT_PRELOAD if args.preload is None else [m for m in args.preload.split(",") if m]
    from ..live.prefork import run_runner

    run_runner(args.listen, jobs, preload)
    return 0


def register(sub, cmd) -> None:
    lv = sub.add_parser("live", help="the live path: outbox backlog, a live feeder")
    lvs = lv.add_subparsers(dest="live_command", required=True, parser_class=Parser)
    ls_ = lvs.add_parser("status", help="backlog (events not yet predicted), lag of the oldest, retries, last error")
    ls_.add_argument("--json", action="store_true")
    ls_.set_defaults(fn=cmd_status)
    lc = lvs.add_parser("collect", help="closed candles of live crypto symbols from their exchanges (ccxt WebSocket "
                                        "streams, REST polling and gap healing) into the live path, until stopped")
    lc.add_argument("--once", action="store_true",
                    help="fetch and write what is due for every live series over REST, then exit")
    lc.add_argument("--exchange", help="comma-separated ccxt exchange ids (default: every exchange a live symbol "
                                       "names)")
    lc.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C or SIGTERM)")
    lc.add_argument("--json", action="store_true")
    lc.set_defaults(fn=cmd_collect)
    lf = lvs.add_parser("feed", help="append closed candles of live symbols at R candles/s in total (synthetic, "
                                     "continuing each series, or replayed from a file)")
    lf.add_argument("--symbols", required=True, help="comma-separated live symbols")
    lf.add_argument("--rate", type=float, required=True, help="candles per second, in total")
    lf.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C, or the end of --file)")
    lf.add_argument("--count", type=int, help="stop after this many candles")
    lf.add_argument("--timeframe", help="default: each symbol's base timeframe")
    lf.add_argument("--file", help="replay candles from a CSV/Parquet file (a symbol column, or one symbol)")
    lf.add_argument("--replay", type=float, metavar="DAYS",
                    help="replay the stored candles of the last DAYS days through the live path (a candle the live "
                         "path has seen already makes no second event)")
    lf.add_argument("--source", help="source spec of synthetic candles (default TP_SOURCE, else synthetic:7)")
    lf.add_argument("--start", help="first candle's time (default: after each series' last stored candle)")
    lf.add_argument("--json", action="store_true")
    lf.set_defaults(fn=cmd_feed)
    lr = lvs.add_parser("runner", help="the warm process live runs are forked from, for a deployment whose run "
                                       "launcher names it (docker/dagster.yaml: address); until SIGTERM")
    lr.add_argument("--listen", metavar="HOST:PORT", help="serve launches on this address (e.g. 0.0.0.0:4001)")
    lr.add_argument("--ping", metavar="HOST:PORT", help="check the runner at this address and exit (0: it answers)")
    lr.add_argument("--jobs", help="comma-separated jobs whose runs it forks (default live_predictions_job)")
    lr.add_argument("--preload", help="comma-separated modules imported before forking (default: the live op's "
                                      "libraries: XGBoost, LightGBM, hmmlearn, torch, neuralforecast)")
    lr.add_argument("--json", action="store_true")
    lr.set_defaults(fn=cmd_runner)

"""`tp`: the platform's command line.

Every command: ``--json`` prints one JSON value as the last line of stdout (logs
go to stderr); an error exits non-zero with a message naming the field or value
at fault (with ``--json``: ``{"error": ..., "field": ...}``); quarantined rows
are results, not errors (exit 0, counted).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .errors import InvalidInput, PlatformError

log = logging.getLogger("tp")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors follow the same JSON/exit convention
        raise InvalidInput(f"{self.prog}: {message}", field="arguments")


def _emit(args, value, text: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(value, default=str))
    else:
        print(text if text is not None else json.dumps(value, indent=2, default=str))


_DSN: str | None = None  # the market store this command opened, to name it if it goes away


def _store():
    from .store.runtime import database_url

    return _store_at(database_url())


def _store_at(dsn: str):
    from .store.db import connect

    global _DSN
    _DSN = dsn
    return connect(dsn)


def _lost_store(e: BaseException) -> PlatformError | None:
    """A connection to the market store lost in the middle of a command, as one clear error."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
        return None
    from .errors import StoreUnavailable
    from .store.db import describe_dsn, redact_dsn

    where = describe_dsn(_DSN) if _DSN else "the market store"
    text = str(e).strip()
    reason = redact_dsn(text.splitlines()[0]) if text else type(e).__name__
    return StoreUnavailable(
        f"lost the market store ({where}) in the middle of the command: {reason}. Its writes are "
        f"transactions, so nothing half-written was kept: run the command again once the database is back",
        field="TP_DATABASE_URL",
    )


def _instance():
    from .instance import get_instance

    return get_instance()


# ---- db ---------------------------------------------------------------------
def cmd_db_url(args) -> int:
    from .errors import StoreUnavailable
    from .store.db import redact_dsn
    from .store.runtime import database_url

    dsn = database_url()
    try:
        with _store_at(dsn):  # embedded, opening the store applies pending migrations: the URL leads to the schema
            pass
    except StoreUnavailable as e:  # the URL is still the answer; say why it may not work yet
        log.warning("%s", e.message)
    shown = dsn if args.show_password else redact_dsn(dsn)
    _emit(args, {"url": shown}, shown)
    return 0


def cmd_db_migrate(args) -> int:
    """The deploy step: apply pending migrations (under an advisory lock: two at once are safe, the second
    finds nothing to do). ``--wait S`` retries an unreachable server for up to S seconds (a database
    container still starting)."""
    from .errors import StoreUnavailable
    from .store.db import connect
    from .store.migrations import current_version
    from .store.runtime import database_url

    global _DSN
    dsn = _DSN = database_url()
    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        try:
            store = connect(dsn, run_migrations=False, check_schema=False)
            break
        except StoreUnavailable as e:
            if time.monotonic() >= deadline:
                raise
            log.warning("%s; retrying", e.message)
            time.sleep(2)
    with store:
        applied = store.migrate()
        v = current_version(store.conn)
    _emit(args, {"schema_version": v, "applied": applied},
          f"schema at version {v}" + (f" (applied {', '.join(map(str, applied))})" if applied else " (up to date)"))
    return 0


# ---- symbols ----------------------------------------------------------------
def _symbol_row(s) -> dict:
    return {"symbol": s.symbol, "category": s.category, "exchange": s.exchange, "base": s.base,
            "quote": s.quote, "timeframes": s.timeframes, "enabled": s.enabled, "live": s.live,
            "metadata": s.metadata}


def _metadata_arg(v: str | None) -> dict | None:
    if not v:
        return None
    try:
        meta = json.loads(v)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"--metadata is not valid JSON ({e.msg} at character {e.pos}): {v!r}",
                           field="metadata") from None
    if not isinstance(meta, dict):
        raise InvalidInput("--metadata must be a JSON object", field="metadata")
    return meta


def _timeframes_arg(v: str | None):
    if v is None:
        return None
    tfs = [t for t in v.split(",") if t.strip()]
    if not tfs:
        raise InvalidInput(f"--timeframes lists no timeframe ({v!r}); give e.g. 5m,1h,1d", field="timeframes")
    return tfs


def cmd_symbols(args) -> int:
    from .symbols import Symbols

    with _store() as store:
        api = Symbols(store, _instance() if args.action != "list" else None)
        if args.action == "list":
            rows = [_symbol_row(s) for s in api.list()]
            text = "\n".join(
                f"{r['symbol']:<16} {r['category']:<7} {r['exchange'] or '':<10} {','.join(r['timeframes']):<20} "
                f"{'enabled' if r['enabled'] else 'disabled'}{' live' if r['live'] else ''}" for r in rows
            ) or "(no symbols)"
            _emit(args, rows, text)
            return 0
        meta = _metadata_arg(getattr(args, "metadata", None))
        if args.action == "add":
            info = api.add(args.symbol, category=args.category, exchange=args.exchange,
                           timeframes=_timeframes_arg(args.timeframes), enabled=not args.disabled,
                           live=args.live, metadata=meta)
            _emit(args, _symbol_row(info), f"added {info.symbol}")
        elif args.action == "update":
            info = api.update(args.symbol, category=args.category, exchange=args.exchange,
                              timeframes=_timeframes_arg(args.timeframes), enabled=args.enabled,
                              live=args.live_flag, metadata=meta)
            _emit(args, _symbol_row(info), f"updated {info.symbol}")
        elif args.action == "remove":
            n = api.remove(args.symbol, purge=args.purge)
            _emit(args, {"removed": args.symbol, "candles_deleted": n}, f"removed {args.symbol} ({n} candles deleted)")
    return 0


# ---- ingest -----------------------------------------------------------------
def cmd_ingest(args) -> int:
    from .ingest import ingest_file

    with _store() as store:
        result, recorded = ingest_file(store, args.path, args.symbol, args.timeframe, category=args.category,
                                       exchange=args.exchange, instance=_instance())
    counts = result.counts()
    log.info("duplicates collapsed: %d; recorded in Dagster: %s", result.duplicates_collapsed, recorded)
    _emit(args, counts, " ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


# ---- backfill -----------------------------------------------------------------
def _date(value: str, field: str):
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        from .errors import InvalidInput

        raise InvalidInput(f"--{field} {value!r} is not a date (YYYY-MM-DD)", field=field) from None


def cmd_backfill(args) -> int:
    from .backfill import OUTPUTS, create_backfill

    assets = tuple(a.strip() for a in args.assets.split(",") if a.strip())
    with _store() as store:
        client = _mlflow_client() if set(assets) & set(OUTPUTS) else None  # the data needs no model registry
        out = create_backfill(_instance(), store, client, args.symbol, _date(args.from_, "from"),
                              _date(args.to, "to"), assets)
    _emit(args, out, f"backfill {out['backfill_id']}: {', '.join(out['assets'])} for {out['symbol']} over "
                     f"{out['months'][0]}..{out['months'][-1]} ({out['partitions']} symbol-months, at most "
                     f"{out['runs_at_most']} runs); pinned versions {out['pinned']}. The daemon runs it "
                     "(`tp up`, or dagster-daemon); follow it in the UI under Runs > Backfills.")
    return 0


# ---- features -----------------------------------------------------------------
def cmd_features_export(args) -> int:
    from .core.symbols import validate_symbol
    from .core.timeframes import parse_timeframe
    from .features.pipeline import export

    symbol, tf = validate_symbol(args.symbol), parse_timeframe(args.timeframe)
    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise InvalidInput(f"--out must name a .parquet file, got {out.name!r}", field="out")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise InvalidInput(f"--out: cannot write to {out.parent} (not a writable directory)", field="out")
    with _store() as store:
        info = store.require_symbol(symbol)
        if tf not in info.timeframes:
            raise InvalidInput(f"{symbol} does not list timeframe {tf} (it lists {', '.join(info.timeframes)})",
                               field="timeframe")
        summary = export(store, info, tf, out)
    _emit(args, summary, f"wrote {summary['rows']} rows x {summary['columns']} columns to {out}"
                         + (f" (recomputed {len(summary['recomputed_months'])} months)" if summary["recomputed_months"] else ""))
    return 0


# ---- models -----------------------------------------------------------------
def _mlflow_client():
    from .resources.mlflow import MLflowResource

    return MLflowResource().client()


def cmd_models_list(args) -> int:
    from .models.registry import list_models

    models = list_models(_mlflow_client())
    lines = []
    for m in models:
        lines.append(f"{m['name']}  ({m['target'] or 'target not recorded'})")
        for v in m["versions"]:
            gate = v["gate"]
            score = f"{gate.get('metric', '')}={gate.get('new_score', '')}" if gate else ""
            aliases = ",".join(v["aliases"]) or "-"
            lines.append(f"  v{v['version']:<4} {aliases:<20} {score:<28} {gate.get('reason', '')}")
            for key in sorted(k[:-len(".interval")] for k in gate if k.endswith(".interval")):
                lines.append(f"        {key:<13} {gate.get(key + '.metric', ''):<15} improvement "
                             f"{gate.get(key + '.improvement', '')} interval {gate[key + '.interval']} margin "
                             f"{gate.get(key + '.margin', '')} ({gate.get(key + '.against', '')})")
    _emit(args, models, "\n".join(lines) or "(no registered models)")
    return 0


def cmd_models_compare(args) -> int:
    from .models.compare import compare_shadow
    from .resources.serving import ModelServer

    with _store() as store:
        out = compare_shadow(store, _mlflow_client(), ModelServer(), args.name, margin=args.margin)
    text = f"{out['model']}: champion v{out['champion']} vs shadow v{out['shadow']}: {out['verdict']}"
    if "interval" in out:
        text += (f"\n  {out['rows']} realized rows since {out['since']}; {out['metric']} champion "
                 f"{out['champion_score']:.4f}, shadow {out['shadow_score']:.4f}; improvement "
                 f"{out['improvement']:+.4f}, interval [{out['interval'][0]:+.4f}, {out['interval'][1]:+.4f}], "
                 f"margin {out['margin']}")
    _emit(args, out, text)
    return 0


def cmd_models_history(args) -> int:
    from .store.champions import history

    with _store() as store:
        rows = history(store.conn, args.name)
    if args.name and not rows:
        raise InvalidInput(f"no champion history for {args.name!r} (tp models list shows the registered names)",
                           field="name")
    text = "\n".join(f"{r['model']} {r['alias']}: version {r['version']} from {r['valid_from']} "
                     f"to {r['valid_to'] or 'now'} ({r['moved_by']})" for r in rows) or "no champion history yet"
    _emit(args, rows, text)
    return 0


def cmd_models_promote(args) -> int:
    from .models.registry import promote

    with _store() as store:
        out = promote(_mlflow_client(), args.name, args.version, conn=store.conn)
    text = f"{out['model']}: champion is now version {out['champion']} (was {out['previous']})"
    if out.get("skipped_gate"):
        text += f"\n  what the gate had said of it (skipped by this promotion): {out['skipped_gate']}"
    _emit(args, out, text)
    return 0


# ---- live -------------------------------------------------------------------
def cmd_live_status(args) -> int:
    from .live.outbox import status

    with _store() as store:
        st = status(store.conn)
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
    ])
    _emit(args, st, text)
    return 0


def cmd_live_feed(args) -> int:
    from .live.feed import feed

    symbols = [s.strip() for s in (args.symbols or "").split(",") if s.strip()]
    start = _date_arg(args.start, "start")
    with _store() as store:
        out = feed(store, symbols, args.rate, args.duration, timeframe=args.timeframe,
                   source_spec=args.source or os.environ.get("TP_SOURCE", "synthetic:7"), file=args.file,
                   start=start, count=args.count, log=lambda m: print(m, file=sys.stderr))
    d = out.as_dict()
    _emit(args, d, f"fed {d['fed']} candles ({d['events']} live events) in {d['duration_s']} s "
                   f"({d['rate']} candles/s): " + " ".join(f"{k}={v}" for k, v in d["written"].items()))
    return 0


# ---- rag --------------------------------------------------------------------------
def _date_arg(value: str | None, field: str):
    from .core.timeframes import parse_time

    return parse_time(value, field, f"--{field}")


def cmd_rag_search(args) -> int:
    from .rag.search import NoLLM, answer, search

    with _store() as store:
        hits = search(store, args.query, k=args.k, symbol=args.symbol, timeframe=args.timeframe,
                      since=_date_arg(args.since, "since"), kind=args.kind)
    out: dict = {"query": args.query, "hits": [h.as_dict() for h in hits]}
    lines = [f"{n:>2}. {h.score:.3f}  [{h.kind}{' ' + h.symbol if h.symbol else ''}"
             f"{' ' + h.timeframe if h.timeframe else ''}] {h.text}" for n, h in enumerate(hits, 1)] or ["no match"]
    if args.answer:
        try:
            out["answer"] = answer(args.query, hits)
            lines += ["", f"answer ({out['answer']['model']}): {out['answer']['answer']}"]
        except NoLLM as e:
            out["answer"] = {"error": e.message}
            lines += ["", e.message]
    _emit(args, out, "\n".join(lines))
    return 0


def cmd_rag_add(args) -> int:
    from .rag.documents import add_note
    from .rag.embed import get_embedder

    src = args.text
    path = Path(src)
    source = None
    try:
        is_file = not args.literal and len(src) < 4096 and path.is_file()
    except (OSError, ValueError):  # a long text is not a file name
        is_file = False
    if is_file:
        try:
            src, source = path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError:
            raise InvalidInput(f"{path} is not a UTF-8 text file", field="text") from None
    with _store() as store:
        ids = add_note(store, get_embedder(), src, symbol=args.symbol, timeframe=args.timeframe,
                       at=_date_arg(args.at, "at"), source=source or "tp rag add")
    _emit(args, {"ids": ids, "pieces": len(ids)},
          f"stored and embedded {len(ids)} document(s) (ids {', '.join(map(str, ids))}); searchable now, in the index "
          "after the next sync")
    return 0


def cmd_rag_sync(args) -> int:
    from .rag.documents import embed_pending, sync_summaries
    from .rag.embed import get_embedder
    from .rag.index import sync_index
    from .rag.settings import rag_settings

    cfg = rag_settings()
    emb = get_embedder(cfg.model)
    symbols = [s.strip() for s in args.symbols.split(",")] if args.symbols else None
    with _store() as store:
        made = sync_summaries(store, emb.count_tokens, emb.max_tokens, symbols=symbols,
                              since=_date_arg(args.since, "since"))
        embedded = embed_pending(store, emb)
        idx = sync_index(store, cfg, rebuild=args.rebuild)
    out = {"summaries": made, "embedded": embedded, "index": idx}
    _emit(args, out, f"summaries: {made['inserted']} new, {made['replaced']} replaced, {made['unchanged']} unchanged; "
                     f"embedded {embedded['embedded']} ({embedded['docs_per_s'] or 0} docs/s); index "
                     + (f"v{idx['version']} ({idx['kind']}, {idx['count']} vectors, +{idx['added']} -{idx['removed']})"
                        if idx.get("version") else idx.get("reason", "unchanged")))
    return 0


def cmd_rag_status(args) -> int:
    from .rag.index import current
    from .rag.settings import rag_settings

    cfg = rag_settings()
    with _store() as store:
        total, embedded, deleted, notes = store.conn.execute(
            "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NULL AND "
            "embedding_model = %s), count(*) FILTER (WHERE deleted_at IS NOT NULL), count(*) FILTER (WHERE "
            "deleted_at IS NULL AND kind = 'note') FROM rag_documents", (cfg.model,)).fetchone()
    m = current(cfg.index_dir)
    st = {"documents": int(total), "notes": int(notes), "embedded": int(embedded), "deleted_not_purged": int(deleted),
          "model": cfg.model, "index": None if m is None else {
              "version": m.version, "kind": m.kind, "count": m.count, "model": m.model, "built_at": m.built_at,
              "recall_at_10": m.recall_at_10, "tombstones": len(m.tombstones), "dir": str(cfg.index_dir)}}
    _emit(args, st, f"documents: {total} ({notes} notes), {embedded} embedded with {cfg.model}; index: "
                    + ("none yet (tp rag sync)" if m is None else
                       f"v{m.version} {m.kind}, {m.count} vectors, built {m.built_at}"))
    return 0


# ---- demo / up / down -------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import gate_figures, run_demo

    summary = run_demo(quick=args.quick, seed=args.seed, log=lambda m: print(m, file=sys.stderr),
                       control=args.control)
    won = {f: [c["model"] for c in cs] for f, cs in summary["champions"].items()}
    text = "\n".join([f"demo ({summary['source']}): {', '.join(summary['symbols'])} over "
                      f"{', '.join(m[:7] for m in summary['months'])}",
                      *(f"  {k:<22} {v:6.2f} s" for k, v in summary["asset_seconds"].items()),
                      f"  stored candles: {summary['stored_candles']}",
                      "  champions: " + "; ".join(f"{f} {', '.join(m) if m else 'none'}" for f, m in won.items()),
                      *(f"  {r['model']:<32} {r['decision']:<10} {r['why'][:110]}" for r in gate_figures(summary["models"])),
                      f"  total {summary['total_seconds']} s"])
    _emit(args, summary, text)
    if summary["failed"]:
        print(f"error: the demo finished with {len(summary['failed'])} failed step(s): "
              + "; ".join(summary["failed"]), file=sys.stderr)
        return 1
    return 0


def _pids_file() -> Path:
    from .settings import get_settings

    return get_settings().run_dir / "pids.json"


def cmd_up(args) -> int:
    from .errors import redact_secrets
    from .instance import REPO_ROOT, ensure_dagster_home
    from .settings import get_settings
    from .store.runtime import database_url

    settings = get_settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    # runs print INFO and above on this console (DEBUG events with --verbose)
    dagster_home = ensure_dagster_home(settings, run_log_level="DEBUG" if args.verbose else "INFO")
    dsn = database_url(settings)
    with _store() as store:
        empty = not store.list_symbols()
    if empty and not args.no_sample:
        from .demo import run_demo

        print("loading the sample market (first start)...", file=sys.stderr)
        sample = run_demo(quick=False, log=lambda m: print(m, file=sys.stderr))
        if sample["failed"]:
            log.warning("the sample loaded with failed steps (see them in the Dagster UI): %s",
                        "; ".join(sample["failed"]))
    # secrets (the database DSN, the tracking URI) go to the services through the environment,
    # never on a command line that `ps` shows
    tracking = settings.mlflow_tracking_uri
    # the children keep this process's mode: handed the embedded server's DSN, they would otherwise count as
    # production (TP_EMBEDDED=auto) and refuse the managed instance and migrations on first use
    env = {**os.environ, "TP_HOME": str(settings.home), "DAGSTER_HOME": str(dagster_home),
           "TP_DATABASE_URL": dsn, "MLFLOW_TRACKING_URI": tracking, "TP_EMBEDDED": "1" if settings.embedded else "0"}
    bindir = Path(sys.executable).parent
    workspace = REPO_ROOT / "workspace.yaml"
    target = ["-w", str(workspace)] if workspace.exists() else ["-m", "trading_platform.definitions"]
    procs = []
    remote_mlflow = tracking.startswith(("http://", "https://", "databricks"))
    if not args.no_mlflow and not remote_mlflow:
        artifacts = settings.home / "mlartifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(
            [str(bindir / "mlflow"), "ui", "--host", args.host, "--port", str(args.mlflow_port)],
            env={**env, "MLFLOW_BACKEND_STORE_URI": tracking, "MLFLOW_DEFAULT_ARTIFACT_ROOT": str(artifacts)},
            start_new_session=True))
    # dagster dev runs in $DAGSTER_HOME, whose dagster.yaml is the repository's (a managed copy):
    # the configuration in force is the one it finds, so it has nothing to warn about
    procs.append(subprocess.Popen(
        [str(bindir / "dagster"), "dev", *target, "-h", args.host, "-p", str(args.port),
         "--log-level", "debug" if args.verbose else "info"],
        env=env, cwd=str(dagster_home), start_new_session=True))
    _pids_file().write_text(json.dumps([p.pid for p in procs]))

    def _interrupt(*_):
        raise KeyboardInterrupt

    # Ctrl-C (even when started from a script that ignores it) and SIGTERM both stop the services
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    mlflow_ui = ("" if args.no_mlflow else f" · MLflow UI {redact_secrets(tracking)}" if remote_mlflow
                 else f" · MLflow UI http://{args.host}:{args.mlflow_port}")
    print(f"Dagster UI http://{args.host}:{args.port}{mlflow_ui} · Ctrl-C to stop", file=sys.stderr)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_children(procs)
        _pids_file().unlink(missing_ok=True)
    return 0


def _stop_children(procs) -> None:
    """Stop the process groups we started as Ctrl-C would (dagster dev shuts down cleanly on
    SIGINT), kill what is still there after 15 s, and reap them (no zombies)."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def _terminate(pids: list[int]) -> list[int]:
    stopped = []
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.time() + 15
    for pid in stopped:
        while time.time() < deadline:
            try:
                os.killpg(pid, 0)
                time.sleep(0.2)
            except ProcessLookupError:
                break
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return stopped


def cmd_down(args) -> int:
    from .settings import get_settings
    from .store.embedded import stop_embedded

    pf = _pids_file()
    stopped = _terminate(json.loads(pf.read_text())) if pf.exists() else []
    pf.unlink(missing_ok=True)
    db = stop_embedded(get_settings().pg_data)
    _emit(args, {"services_stopped": len(stopped), "database_stopped": db},
          f"stopped {len(stopped)} service(s); embedded database {'stopped' if db else 'was not running'}")
    return 0


# ---- parser -----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tp", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name, fn, help):
        sp = sub.add_parser(name, help=help)
        sp.set_defaults(fn=fn)
        sp.add_argument("--json", action="store_true", help="one JSON value on the last line of stdout")
        return sp

    up = cmd("up", cmd_up, "start the embedded database, load sample data, run dagster dev and the MLflow UI")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=3000)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--no-mlflow", action="store_true")
    up.add_argument("--no-sample", action="store_true", help="do not load the sample market on first start")
    up.add_argument("--verbose", action="store_true", help="print Dagster's DEBUG events of every run too")
    cmd("down", cmd_down, "stop the services `tp up` started and the embedded database")
    demo = cmd("demo", cmd_demo, "load the sample market, materialize everything, print a summary")
    demo.add_argument("--quick", action="store_true", help="smaller sample (2 symbols, current month)")
    demo.add_argument("--control", action="store_true",
                      help="the control market: random walks of the same shape, where no model should earn a "
                           "champion")
    demo.add_argument("--seed", type=int, default=7)

    db = sub.add_parser("db", help="the market store")
    dbs = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    u = dbs.add_parser("url", help="a URI psql accepts (password as *** unless --show-password)")
    u.add_argument("--show-password", action="store_true")
    u.add_argument("--json", action="store_true")
    u.set_defaults(fn=cmd_db_url)
    m = dbs.add_parser("migrate", help="apply pending schema migrations (the deploy step; embedded, also done on "
                                       "first use)")
    m.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="retry an unreachable database for up to this long (a container still starting)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(fn=cmd_db_migrate)

    sy = sub.add_parser("symbols", help="managed symbols")
    sys_ = sy.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ls = sys_.add_parser("list")
    ls.add_argument("--json", action="store_true")
    for name in ("add", "update"):
        a = sys_.add_parser(name)
        a.add_argument("symbol")
        a.add_argument("--category", choices=None)
        a.add_argument("--exchange")
        a.add_argument("--timeframes", help="comma-separated, e.g. 5m,1h,1d")
        a.add_argument("--metadata", help="a JSON object")
        a.add_argument("--json", action="store_true")
        if name == "add":
            a.add_argument("--live", action="store_true")
            a.add_argument("--disabled", action="store_true")
        else:
            g = a.add_mutually_exclusive_group()
            g.add_argument("--enable", dest="enabled", action="store_const", const=True)
            g.add_argument("--disable", dest="enabled", action="store_const", const=False)
            g2 = a.add_mutually_exclusive_group()
            g2.add_argument("--live", dest="live_flag", action="store_const", const=True)
            g2.add_argument("--not-live", dest="live_flag", action="store_const", const=False)
    rm = sys_.add_parser("remove")
    rm.add_argument("symbol")
    rm.add_argument("--purge", action="store_true", help="also delete the symbol's candles")
    rm.add_argument("--json", action="store_true")
    sy.set_defaults(fn=cmd_symbols)

    fe = sub.add_parser("features", help="technical features")
    fes = fe.add_subparsers(dest="features_command", required=True, parser_class=_Parser)
    ex = fes.add_parser("export", help="write one symbol's features to Parquet (computing missing or stale ones)")
    ex.add_argument("--symbol", required=True)
    ex.add_argument("--timeframe", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(fn=cmd_features_export)

    mo = sub.add_parser("models", help="the MLflow model registry")
    mos = mo.add_subparsers(dest="models_command", required=True, parser_class=_Parser)
    ml = mos.add_parser("list", help="registered models, versions, aliases and their metrics")
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(fn=cmd_models_list)
    mp = mos.add_parser("promote", help="move the champion alias to NAME VERSION by hand")
    mp.add_argument("name")
    mp.add_argument("version")
    mp.add_argument("--json", action="store_true")
    mp.set_defaults(fn=cmd_models_promote)
    mh = mos.add_parser("history", help="who held champion and challenger when (the champion history)")
    mh.add_argument("name", nargs="?", help="one registered model (default: every one)")
    mh.add_argument("--json", action="store_true")
    mh.set_defaults(fn=cmd_models_history)
    mc = mos.add_parser("compare", help="champion against its shadow (the challenger) on the outcomes realized since")
    mc.add_argument("name")
    mc.add_argument("--margin", type=float, default=0.005, help="minimum improvement the shadow must show")
    mc.add_argument("--json", action="store_true")
    mc.set_defaults(fn=cmd_models_compare)

    lv = sub.add_parser("live", help="the live path: outbox backlog, a live feeder")
    lvs = lv.add_subparsers(dest="live_command", required=True, parser_class=_Parser)
    ls_ = lvs.add_parser("status", help="backlog (events not yet predicted), lag of the oldest, retries, last error")
    ls_.add_argument("--json", action="store_true")
    ls_.set_defaults(fn=cmd_live_status)
    lf = lvs.add_parser("feed", help="append closed candles of live symbols at R candles/s in total (synthetic, "
                                     "continuing each series, or replayed from a file)")
    lf.add_argument("--symbols", required=True, help="comma-separated live symbols")
    lf.add_argument("--rate", type=float, required=True, help="candles per second, in total")
    lf.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C, or the end of --file)")
    lf.add_argument("--count", type=int, help="stop after this many candles")
    lf.add_argument("--timeframe", help="default: each symbol's base timeframe")
    lf.add_argument("--file", help="replay candles from a CSV/Parquet file (a symbol column, or one symbol)")
    lf.add_argument("--source", help="source spec of synthetic candles (default TP_SOURCE, else synthetic:7)")
    lf.add_argument("--start", help="first candle's time (default: after each series' last stored candle)")
    lf.add_argument("--json", action="store_true")
    lf.set_defaults(fn=cmd_live_feed)

    rg = sub.add_parser("rag", help="the knowledge base: period summaries and notes, searchable in plain words")
    rgs = rg.add_subparsers(dest="rag_command", required=True, parser_class=_Parser)
    rq = rgs.add_parser("search", help="top-k documents for a query, filters applied before the cut")
    rq.add_argument("query")
    rq.add_argument("--symbol")
    rq.add_argument("--timeframe")
    rq.add_argument("--since", help="documents of periods ending at or after this date")
    rq.add_argument("--kind", choices=["summary", "note"])
    rq.add_argument("-k", type=int, default=10)
    rq.add_argument("--answer", action="store_true", help="also ask the LLM at OLLAMA_URL, given the documents")
    rq.add_argument("--json", action="store_true")
    rq.set_defaults(fn=cmd_rag_search)
    ra = rgs.add_parser("add", help="add a note or news snippet (a file or the text itself), embedded at once")
    ra.add_argument("text", help="a text file's path, or the text")
    ra.add_argument("--symbol")
    ra.add_argument("--timeframe")
    ra.add_argument("--at", help="when the note was written (default now)")
    ra.add_argument("--literal", action="store_true", help="TEXT is the text even if a file has that name")
    ra.add_argument("--json", action="store_true")
    ra.set_defaults(fn=cmd_rag_add)
    rsy = rgs.add_parser("sync", help="summarize new periods, embed new documents, update the index")
    rsy.add_argument("--rebuild", action="store_true", help="rebuild the index from the stored vectors")
    rsy.add_argument("--since", help="re-summarize every period from this date")
    rsy.add_argument("--symbols", help="comma-separated (default: every enabled symbol)")
    rsy.add_argument("--json", action="store_true")
    rsy.set_defaults(fn=cmd_rag_sync)
    rst = rgs.add_parser("status", help="documents, embeddings and the current index version")
    rst.add_argument("--json", action="store_true")
    rst.set_defaults(fn=cmd_rag_status)

    bf = cmd("backfill", cmd_backfill,
             "an asset backfill over a symbol's history: the model outputs (model versions pinned), or the "
             "market data and features (--assets market,features); the daemon runs it in chunks")
    bf.add_argument("--symbol", required=True)
    bf.add_argument("--from", dest="from_", required=True, metavar="DATE")
    bf.add_argument("--to", required=True, metavar="DATE")
    bf.add_argument("--assets", default="predictions,forecasts,patterns",
                    help="comma-separated: predictions, forecasts, patterns, market, features")

    ing = cmd("ingest", cmd_ingest, "load a CSV/Parquet file of candles into the store")
    ing.add_argument("path")
    ing.add_argument("--symbol", required=True)
    ing.add_argument("--timeframe", required=True)
    ing.add_argument("--category")
    ing.add_argument("--exchange")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("TP_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("pgserver", "alembic", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("psycopg").setLevel(logging.ERROR)  # its cleanup after a lost connection is not news
    from .settings import isolate_mlflow_credentials

    isolate_mlflow_credentials()  # before anything hands the tracking URI to MLflow or to a service
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        return int(args.fn(args) or 0)
    except PlatformError as e:
        return _fail(e, as_json)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - only a lost database is turned into an error here
        lost = _lost_store(e)
        if lost is None:
            raise
        return _fail(lost, as_json)


def _fail(e: PlatformError, as_json: bool) -> int:
    if as_json:
        print(json.dumps(e.to_json()))
    print(f"error: {e.message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

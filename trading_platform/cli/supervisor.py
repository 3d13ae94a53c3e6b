"""`tp up` and `tp down`: the process supervisor of the local services (dagster dev and the MLflow UI, each
in its own process group) and the embedded database."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._base import emit

log = logging.getLogger("tp")


def pids_file() -> Path:
    from ..settings import get_settings

    return get_settings().run_dir / "pids.json"


def mark_nux_seen(url: str, timeout_s: float = 120.0, stop: threading.Event | None = None) -> bool:
    """Mark Dagster's first-visit modal ("Join the Dagster community") as seen through Dagster's own GraphQL
    mutation (``setNuxSeen``), once the webserver at ``url`` answers. True when it reports it seen."""
    import http.client
    import urllib.error
    import urllib.request

    body = json.dumps({"query": "mutation { setNuxSeen }"}).encode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own webserver: never a proxy
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        req = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
        try:
            with opener.open(req, timeout=5) as r:
                out = json.loads(r.read())
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
            time.sleep(1)  # the webserver is still starting
            continue
        if isinstance(out, dict) and ((out.get("data") or {}).get("setNuxSeen") is True):
            return True
        log.warning("Dagster did not mark its first-visit modal as seen: %s",
                    out.get("errors") if isinstance(out, dict) else out)
        return False
    return False


def cmd_up(args) -> int:
    from ..api._context import open_store
    from ..errors import redact_secrets
    from ..instance import REPO_ROOT, ensure_dagster_home
    from ..settings import get_settings
    from ..store.runtime import database_url

    settings = get_settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    # runs print INFO and above on this console (DEBUG events with --verbose)
    dagster_home = ensure_dagster_home(settings, run_log_level="DEBUG" if args.verbose else "INFO")
    dsn = database_url(settings)
    with open_store(dsn) as store:
        empty = not store.list_symbols()
    if empty and not args.no_sample:
        from ..demo import run_demo

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
        # MLflow 3's configuration has no switch for its UI's Assistant panel: the most it allows is keeping
        # the Assistant local-only (no remote access), whatever the user's environment says; the docs say
        # what a user closes once (docs/getting-started.md, "The two UIs on a first visit")
        procs.append(subprocess.Popen(
            [str(bindir / "mlflow"), "ui", "--host", args.host, "--port", str(args.mlflow_port)],
            env={**env, "MLFLOW_BACKEND_STORE_URI": tracking, "MLFLOW_DEFAULT_ARTIFACT_ROOT": str(artifacts),
                 "MLFLOW_ENABLE_REMOTE_ASSISTANT": "false"},
            start_new_session=True))
    # dagster dev runs in $DAGSTER_HOME, whose dagster.yaml is the repository's (a managed copy):
    # the configuration in force is the one it finds, so it has nothing to warn about
    procs.append(subprocess.Popen(
        [str(bindir / "dagster"), "dev", *target, "-h", args.host, "-p", str(args.port),
         "--log-level", "debug" if args.verbose else "info"],
        env=env, cwd=str(dagster_home), start_new_session=True))
    pids_file().write_text(json.dumps([p.pid for p in procs]))
    # the UI opens without "Join the Dagster community" in the way (marked once the webserver answers)
    stop = threading.Event()
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    threading.Thread(target=mark_nux_seen, args=(f"http://{host}:{args.port}",), kwargs={"stop": stop},
                     daemon=True).start()

    def _interrupt(*_):
        raise KeyboardInterrupt

    # Ctrl-C (even when started from a script that ignores it) and SIGTERM both stop the services
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    mlflow_ui = ("" if args.no_mlflow else f" · MLflow UI {redact_secrets(tracking)}" if remote_mlflow
                 else f" · MLflow UI http://{args.host}:{args.mlflow_port}")
    print(f"Dagster UI http://{args.host}:{args.port}{mlflow_ui} · Ctrl-C to stop", file=sys.stderr)
    collector = Collected(env, bindir, dsn)
    try:
        while all(p.poll() is None for p in procs):
            collector.check()
            pids_file().write_text(json.dumps([p.pid for p in procs] + collector.pids()))
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        stop_children(procs + collector.procs())
        pids_file().unlink(missing_ok=True)
    return 0


def exchange_source(spec: str | None = None) -> bool:
    """Whether the market comes from exchanges (TP_SOURCE ccxt or auto): on the synthetic sample (the default)
    or files, the exchanges' candles would be another market, so `tp up` runs no collector."""
    from ..sources.base import parse_spec

    kind, _ = parse_spec(spec if spec is not None else os.environ.get("TP_SOURCE", "synthetic"))
    return kind in ("ccxt", "auto")


def live_exchange_symbols(dsn: str) -> list[str]:
    """Enabled live crypto symbols (their exchange is a ccxt id): what `tp live collect` would collect."""
    import psycopg

    from ..store.collector import LIVE_SERIES_SQL

    with psycopg.connect(dsn, connect_timeout=5) as c:
        return [r[0] for r in c.execute(LIVE_SERIES_SQL).fetchall() if r[1] == "crypto" and r[2]]


class Collected:
    """`tp live collect` under `tp up`: started while a live symbol names an exchange and the market comes from
    exchanges; restarted (after 5 s) when it exits, except on bad configuration (exit 2, reported once)."""

    CHECK_S = 10.0

    def __init__(self, env: dict, bindir: Path, dsn: str):
        self.env, self.bindir, self.dsn = env, bindir, dsn
        self.proc: subprocess.Popen | None = None
        self.next_check = 0.0
        self.refused = False

    def check(self) -> None:
        now = time.monotonic()
        if self.proc is not None and self.proc.poll() is not None:
            rc, self.proc = self.proc.returncode, None
            if rc == 2:
                self.refused = True
                log.error("tp live collect refused its configuration (exit 2, above); not restarted")
            else:
                log.warning("tp live collect exited (%s); restarting in 5 s", rc)
                self.next_check = now + 5.0
        if self.proc is not None or self.refused or now < self.next_check:
            return
        self.next_check = now + self.CHECK_S
        if not exchange_source(self.env.get("TP_SOURCE", "synthetic")):
            return
        try:
            live = live_exchange_symbols(self.dsn)
        except Exception as e:  # the store restarting: try again later
            log.debug("collector check: %s", e)
            return
        if live:
            print(f"starting tp live collect for {', '.join(live)}", file=sys.stderr)
            self.proc = subprocess.Popen([str(self.bindir / "tp"), "live", "collect"], env=self.env,
                                         start_new_session=True)

    def procs(self) -> list:
        return [self.proc] if self.proc is not None else []

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []


def stop_children(procs) -> None:
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


def terminate(pids: list[int]) -> list[int]:
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
    from ..settings import get_settings
    from ..store.embedded import stop_embedded

    pf = pids_file()
    stopped = terminate(json.loads(pf.read_text())) if pf.exists() else []
    pf.unlink(missing_ok=True)
    db = stop_embedded(get_settings().pg_data)
    emit(args, {"services_stopped": len(stopped), "database_stopped": db},
         f"stopped {len(stopped)} service(s); embedded database {'stopped' if db else 'was not running'}")
    return 0


def register(sub, cmd) -> None:
    up = cmd("up", cmd_up, "start the embedded database, load sample data, run dagster dev and the MLflow UI")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=3000)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--no-mlflow", action="store_true")
    up.add_argument("--no-sample", action="store_true", help="do not load the sample market on first start")
    up.add_argument("--verbose", action="store_true", help="print Dagster's DEBUG events of every run too")
    cmd("down", cmd_down, "stop the services `tp up` started and the embedded database")

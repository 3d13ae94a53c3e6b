"""`tp up` and `tp down`: the process supervisor of the local services (dagster dev, the MLflow UI, the alert
delivery worker, the watchdog and, for exchange markets, the live collector, each in its own process group) and
the embedded database."""

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

from ..errors import InvalidInput
from ._base import emit

log = logging.getLogger("tp")


def _write_pids(pids: list[int]) -> None:
    """pids.json replaced whole (written beside it, then renamed): `tp down` or a second `tp up` reading it while
    it is rewritten sees the old list or the new one, never an empty file."""
    from ..core.files import replace_text

    replace_text(pids_file(), json.dumps(pids))


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


READY_TIMEOUT_S = 120.0  # how long `tp up` waits for the UIs to answer before saying they do not
# libraries' progress bars and INFO chatter, off on the console of `tp up` (and of every service it starts)
# unless --verbose; a variable the user's environment sets is left as it is
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_LOGGING_LEVEL": "WARNING"}
# `dagster dev` warns on every start that it is superseded by `dg dev` (a SupersessionWarning, a FutureWarning):
# nothing of ours runs in that process to filter it by Dagster's category, and -W can name only a built-in
# one, so its base category and its exact message
DEV_SUPERSEDED = "ignore:Function `dev_command` is superseded:FutureWarning"


def console_env(verbose: bool) -> dict[str, str]:
    """The environment that keeps `tp up`'s console quiet (TP_VERBOSE=0 and QUIET_ENV), or TP_VERBOSE=1."""
    from ..instance import VERBOSE_ENV

    if verbose:
        return {VERBOSE_ENV: "1"}
    return {VERBOSE_ENV: "0", **{k: v for k, v in QUIET_ENV.items() if k not in os.environ}}


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a GET of ``url`` (one of our own services: never through a proxy) answers 2xx."""
    import http.client
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return False


def announce_when_ready(checks: dict[str, str], banner: str, stop: threading.Event,
                        timeout_s: float = READY_TIMEOUT_S, hint: str = "") -> bool:
    """Print ``banner`` once every service in ``checks`` (name -> URL) answers. After ``timeout_s`` without
    an answer, say which do not (``hint``: where to look) and go on waiting: the banner still comes when they
    answer. True when it was printed."""
    pending = dict(checks)
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        pending = {name: url for name, url in pending.items() if not answers(url)}
        if not pending:
            print(banner, file=sys.stderr, flush=True)
            return True
        if deadline is not None and time.monotonic() >= deadline:
            deadline = None
            print(f"{' and '.join(pending)} not answering after {timeout_s:.0f} s "
                  f"({', '.join(pending.values())}){hint}; still waiting (Ctrl-C to stop)", file=sys.stderr, flush=True)
        stop.wait(1.0 if deadline is not None else 5.0)
    return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cmd_up(args) -> int:
    from ..api._context import open_store
    from ..errors import redact_secrets
    from ..instance import REPO_ROOT, ensure_dagster_home, fail_orphaned_runs
    from ..settings import get_settings
    from ..store.runtime import database_url

    settings = get_settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    # quiet unless --verbose: here (the sample loads in this process) and in every service started below
    os.environ.update(console_env(args.verbose))
    if args.verbose:  # the loaders' INFO too (faiss, sentence-transformers: quiet in `tp`'s logging setup)
        for name in ("faiss", "sentence_transformers"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    # runs print INFO and above on this console (DEBUG events with --verbose)
    dagster_home = ensure_dagster_home(settings, run_log_level="DEBUG" if args.verbose else "INFO")
    if pids_file().exists() and any(_alive(p) for p in json.loads(pids_file().read_text() or "[]")):
        raise InvalidInput(f"the platform is already running (pids in {pids_file()}): `tp down` first")
    # the model signing key (docs/security.md): generated under $TP_HOME on the first start when not given, so
    # every service started below signs and verifies with the same one; a key file others can read stops here
    from ..models.signing import signing_key

    signing_key(settings)
    # what a kill -9 of everything or a crash left running: nothing of this instance runs now
    orphans = fail_orphaned_runs("the platform stopped while the run was in flight (found at `tp up`)", settings)
    if orphans:
        log.warning("%d run(s) left running by an earlier stop marked failed (their work is retried)", len(orphans))
    dsn = database_url(settings)
    with open_store(dsn) as store:
        empty = not store.list_symbols()
    if empty and not args.no_sample:
        from ..demo import run_demo
        from ..instance import quiet_dagster_warnings

        quiet_dagster_warnings()
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
    names: dict[int, str] = {}  # pid -> the service, for a message when one exits
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    ready = {"the Dagster UI": f"http://{host}:{args.port}/server_info"}
    if args.api_port:
        ready["the API"] = f"http://127.0.0.1:{args.api_port}/health"
    ui_log = settings.run_dir / "mlflow-ui.log"
    remote_mlflow = tracking.startswith(("http://", "https://", "databricks"))
    local_mlflow = not args.no_mlflow and not remote_mlflow
    if local_mlflow:
        artifacts = settings.home / "mlartifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        # the MLflow UI, tp serve's registry reader and the first run would each create a fresh database's
        # tables, at once: two alembic migrations of one database, and one of them fails. Created here, once,
        # before any of them starts
        ensure_mlflow_schema(tracking)
        # the MLflow UI's own console (uvicorn's workers starting, its security notice, its libraries'
        # deprecations) goes to a file unless --verbose; if it exits, its last lines are printed below
        out = None if args.verbose else open(ui_log, "wb")
        # MLflow 3's configuration has no switch for its UI's Assistant panel: the most it allows is keeping
        # the Assistant local-only (no remote access), whatever the user's environment says; the docs say
        # what a user closes once (docs/getting-started.md, "The two UIs on a first visit")
        try:
            procs.append(subprocess.Popen(
                [str(bindir / "mlflow"), "ui", "--host", args.host, "--port", str(args.mlflow_port)],
                env={**env, "MLFLOW_BACKEND_STORE_URI": tracking, "MLFLOW_DEFAULT_ARTIFACT_ROOT": str(artifacts),
                     "MLFLOW_ENABLE_REMOTE_ASSISTANT": "false"},
                stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True))
        finally:
            if out is not None:
                out.close()
        names[procs[-1].pid] = "the MLflow UI"
        ready["the MLflow UI"] = f"http://{host}:{args.mlflow_port}/health"
    # dagster dev runs in $DAGSTER_HOME, whose dagster.yaml is the repository's (a managed copy):
    # the configuration in force is the one it finds, so it has nothing to warn about. Its webserver and
    # daemon print WARNING and above (the daemon's INFO is a line or two per sensor tick: the live sensor
    # ticks every 5 s), everything with --verbose; runs print what the managed dagster.yaml says (above)
    procs.append(subprocess.Popen(
        [sys.executable, *([] if args.verbose else ["-W", DEV_SUPERSEDED]), str(bindir / "dagster"), "dev",
         *target, "-h", args.host, "-p", str(args.port), "--log-level", "debug" if args.verbose else "warning"],
        env=env, cwd=str(dagster_home), start_new_session=True))
    names[procs[-1].pid] = "dagster dev"
    _write_pids([p.pid for p in procs])
    # the UI opens without "Join the Dagster community" in the way (marked once the webserver answers)
    stop = threading.Event()
    threading.Thread(target=mark_nux_seen, args=(f"http://{host}:{args.port}",), kwargs={"stop": stop},
                     daemon=True).start()

    def _interrupt(*_):
        raise KeyboardInterrupt

    # Ctrl-C (even when started from a script that ignores it) and SIGTERM both stop the services
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    mlflow_ui = ("" if args.no_mlflow else f" · MLflow UI {redact_secrets(tracking)}" if remote_mlflow
                 else f" · MLflow UI http://{args.host}:{args.mlflow_port}")
    # the banner once the UIs answer (dagster dev takes 10-30 s to serve its UI), not before
    api = f" · API http://127.0.0.1:{args.api_port}/docs" if args.api_port else ""
    banner = f"Dagster UI http://{args.host}:{args.port}{mlflow_ui}{api} · Ctrl-C to stop"
    hint = f"; the MLflow UI's output is in {ui_log}" if local_mlflow and not args.verbose else ""
    threading.Thread(target=announce_when_ready, args=(ready, banner, stop), kwargs={"hint": hint},
                     daemon=True).start()
    services = [Collected(env, bindir, dsn), Delivering(env, bindir), Watching(env, bindir)]
    if args.api_port:
        services.append(Serving(env, bindir, args.api_port))
    try:
        while all(p.poll() is None for p in procs):
            for svc in services:
                svc.check()
            _write_pids([p.pid for p in procs] + [i for svc in services for i in svc.pids()])
            time.sleep(1)
        for p in procs:
            if p.poll() is not None:
                name = names.get(p.pid, "a service")
                last = tail(ui_log) if name == "the MLflow UI" and not args.verbose else ""
                log.error("%s exited (%s); stopping the others%s", name, p.returncode,
                          f". Its last lines ({ui_log}):\n{last}" if last else "")
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        stop_children(procs + [p for svc in services for p in svc.procs()])
        pids_file().unlink(missing_ok=True)
    return 0


def ensure_mlflow_schema(tracking: str) -> None:
    """``tp up`` creates a local MLflow store's tables before it starts the services that would race to."""
    from ..resources.mlflow import ensure_schema

    ensure_schema(tracking)


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


class Supervised:
    """A `tp` service under `tp up`: started while ``wanted()`` says so (asked every ``CHECK_S``), restarted (after
    5 s) when it exits, except on bad configuration (exit 2, reported once)."""

    ARGV: tuple[str, ...] = ()
    CHECK_S = 0.0

    def __init__(self, env: dict, bindir: Path):
        self.env, self.bindir = env, bindir
        self.proc: subprocess.Popen | None = None
        self.next_check = 0.0
        self.refused = False

    @property
    def name(self) -> str:
        return "tp " + " ".join(self.ARGV)

    def wanted(self) -> bool:
        return True

    def check(self) -> None:
        now = time.monotonic()
        if self.proc is not None and self.proc.poll() is not None:
            rc, self.proc = self.proc.returncode, None
            if rc == 2:
                self.refused = True
                log.error("%s refused its configuration (exit 2, above); not restarted", self.name)
            else:
                log.warning("%s exited (%s); restarting in 5 s", self.name, rc)
                self.next_check = now + 5.0
        if self.proc is not None or self.refused or now < self.next_check:
            return
        self.next_check = now + self.CHECK_S
        if self.wanted():
            self.proc = subprocess.Popen([str(self.bindir / "tp"), *self.ARGV], env=self.env, start_new_session=True)

    def procs(self) -> list:
        return [self.proc] if self.proc is not None else []

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []


class Collected(Supervised):
    """`tp live collect` under `tp up`: started while a live symbol names an exchange and the market comes from
    exchanges; restarted (after 5 s) when it exits, except on bad configuration (exit 2, reported once)."""

    ARGV = ("live", "collect")
    CHECK_S = 10.0

    def __init__(self, env: dict, bindir: Path, dsn: str):
        super().__init__(env, bindir)
        self.dsn = dsn

    def wanted(self) -> bool:
        if not exchange_source(self.env.get("TP_SOURCE", "synthetic")):
            return False
        try:
            live = live_exchange_symbols(self.dsn)
        except Exception as e:  # the store restarting: try again later
            log.debug("collector check: %s", e)
            return False
        if live:
            print(f"starting tp live collect for {', '.join(live)}", file=sys.stderr)
        return bool(live)


class Delivering(Supervised):
    """`tp alerts deliver` under `tp up`: the alert delivery worker (it idles on LISTEN when nothing is due),
    always running. Its deliveries are in the database: what it had claimed when it stopped is reclaimed by the
    next one."""

    ARGV = ("alerts", "deliver")


class Watching(Supervised):
    """`tp watchdog run` under `tp up`: the checks the daemon cannot make about itself (its heartbeat, the
    database, the delivery worker) and the spool while the database is down; always running."""

    ARGV = ("watchdog", "run")


class Serving(Supervised):
    """`tp serve` under `tp up`, on loopback only (a public bind is the deployment's, with TP_API_TOKEN): the MCP
    server over streamable HTTP at /mcp and the read API at /api/v1; always running."""

    def __init__(self, env: dict, bindir: Path, port: int):
        super().__init__(env, bindir)
        self.ARGV = ("serve", "--host", "127.0.0.1", "--port", str(port))


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


def _alive(pgid: int) -> bool:
    """Whether a process group has a member that is not a zombie (a SIGKILLed group's members can linger as
    zombies where nothing reaps them)."""
    from ..live.prefork import stat_fields

    return any((f := stat_fields(p.name)) and f[2] == str(pgid) for p in Path("/proc").glob("[0-9]*"))


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
    from ..instance import fail_orphaned_runs
    from ..settings import get_settings
    from ..store.embedded import stop_embedded

    pf = pids_file()
    stopped = terminate(json.loads(pf.read_text())) if pf.exists() else []
    pf.unlink(missing_ok=True)
    # runs whose process ended with the services (SIGKILLed after 15 s, or before they could report)
    orphans = fail_orphaned_runs("`tp down` stopped the platform while the run was in flight")
    db = stop_embedded(get_settings().pg_data)
    emit(args, {"services_stopped": len(stopped), "database_stopped": db, "runs_marked_failed": len(orphans)},
         f"stopped {len(stopped)} service(s); embedded database {'stopped' if db else 'was not running'}"
         + (f"; {len(orphans)} run(s) in flight marked failed" if orphans else ""))
    return 0


def register(sub, cmd) -> None:
    up = cmd("up", cmd_up, "start the embedded database, load sample data, run dagster dev and the MLflow UI")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=3000)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--no-mlflow", action="store_true")
    up.add_argument("--api-port", type=int, default=8000,
                    help="tp serve (the MCP server at /mcp and the read API) on 127.0.0.1 at this port; 0: not started")
    up.add_argument("--no-sample", action="store_true", help="do not load the sample market on first start")
    up.add_argument("--verbose", action="store_true",
                    help="print everything: Dagster's DEBUG events of every run, every sensor tick, Dagster's "
                         "BetaWarnings, the MLflow UI's output, libraries' progress bars and INFO")
    cmd("down", cmd_down, "stop the services `tp up` started and the embedded database")

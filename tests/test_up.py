"""`tp up` opens the Dagster UI without its first-visit modal in the way, and keeps its console quiet."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())["data"]
    except (urllib.error.URLError, OSError, ValueError):
        return None


def test_tp_up_marks_dagsters_first_visit_modal_as_seen(tp_env, tmp_path):
    """Also: with no TP_MODEL_SIGNING_KEY, the first start generates the embedded home's key, owner-only."""
    port = _free_port()
    env = {**tp_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    env.pop("TP_MODEL_SIGNING_KEY", None)
    up = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "up", "--no-sample", "--no-mlflow",
                           "--port", str(port), "--api-port", str(_free_port())], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shown = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and up.poll() is None:
            data = _graphql(port, "{ shouldShowNux }")
            if data is not None:
                shown = data["shouldShowNux"]
                if shown is False:
                    break
            time.sleep(1)
    finally:
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=60)
    assert shown is False, f"the webserver {'never answered' if shown is None else 'still shows the modal'}:\n{err}"
    key = Path(tp_env["TP_HOME"]) / "secrets" / "model-signing.key"
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600" and len(key.read_text().strip()) == 64
    assert key.read_text().strip() not in err


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own services: never a proxy
    try:
        with opener.open(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_tp_up_is_quiet_over_a_minute_of_idle_live_symbols(tp_env, tmp_path):
    """The console of `tp up` (the MLflow UI too) with two live symbols and no events: the banner once both
    UIs answer, then no line per sensor tick (the live sensor ticks every 5 s) and none of Dagster's
    BetaWarnings (its code server and every run worker load the definitions)."""
    env = {**tp_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    for symbol in ("BTC/USDT", "ETH/USDT"):
        subprocess.run([sys.executable, "-m", "trading_platform.cli", "symbols", "add", symbol, "--live",
                        "--category", "crypto", "--exchange", "binance", "--timeframes", "1m"],
                       env=env, check=True, capture_output=True)
    port, mlflow_port, api_port = _free_port(), _free_port(), _free_port()
    ui = {"dagster": f"http://127.0.0.1:{port}/server_info", "mlflow": f"http://127.0.0.1:{mlflow_port}/health",
          "api": f"http://127.0.0.1:{api_port}/health"}  # tp serve, on loopback
    up = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "up", "--no-sample", "--port", str(port),
                           "--mlflow-port", str(mlflow_port), "--api-port", str(api_port)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    banner = threading.Event()
    answered_at_banner: dict[str, bool] = {}

    def read():
        for line in up.stdout:
            lines.append(line.rstrip("\n"))
            if "Dagster UI http" in line and not banner.is_set():
                answered_at_banner.update({name: _answers(url) for name, url in ui.items()})
                banner.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        banner.wait(timeout=150)
        if banner.is_set():
            time.sleep(60)  # a minute of idle live symbols: a dozen live-sensor ticks
        console = list(lines)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        reader.join(timeout=10)
    shown = "\n".join(console)
    assert banner.is_set(), f"no banner:\n{shown}"
    assert answered_at_banner == {"dagster": True, "mlflow": True, "api": True}, (answered_at_banner, shown)
    assert not [line for line in console if "sensor" in line.lower()], shown
    assert "BetaWarning" not in shown and "Warning:" not in shown, shown
    assert len(console) <= 8, shown  # the banner and what a user must act on (nothing, here)


def _runs(dagster_home, statuses=None):
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        return instance.get_runs(RunsFilter(statuses=statuses) if statuses else None)


def _waiting_on_lock(conn) -> int:
    return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()[0]


def _wait(cond, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"tp up exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_everything(dagster_home) -> int:
    """kill -9 of every process of this platform (found by its DAGSTER_HOME): tp up, dagster dev, its code server,
    daemon and webserver, the warm process and the run workers."""
    import os
    from pathlib import Path

    mark = f"DAGSTER_HOME={dagster_home}".encode()
    killed = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if mark in (d / "environ").read_bytes().split(b"\0"):
                os.kill(int(d.name), signal.SIGKILL)
                killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed


def test_tp_down_during_a_live_batch_and_a_start_after_kill_9_leave_no_run_in_flight(tp_env, tmp_path, dsn):
    """A live batch in flight (blocked on its symbol's lock, which the test holds): `tp down` leaves no run
    STARTING, STARTED or CANCELING. Then another batch in flight, and a kill -9 of every process: the next
    `tp up` marks what the crash left failed, and the batch is re-requested and predicted."""
    from datetime import datetime, timezone

    import psycopg
    from dagster import DagsterRunStatus

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.live.feed import next_closed
    from trading_platform.sources.synthetic import SyntheticSource
    from trading_platform.store.db import connect

    in_flight = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    home = tmp_path / "home" / "dagster"
    env = {**tp_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "TP_LIVE_RETRY_AFTER_S": "3"}
    with connect(dsn) as store:
        store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m"], live=True))

    def feed(n):
        with connect(dsn) as store:
            last = store.candle_stats("BTC/USDT", "5m")["last_ts"] or datetime(2025, 1, 1, tzinfo=timezone.utc)
            new = next_closed(SyntheticSource(7), store.get_symbol("BTC/USDT"), "5m", last, n)
            return store.write_live("BTC/USDT", "5m", new).events

    def up():
        port = _free_port()
        return subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "up", "--no-sample", "--no-mlflow",
                                 "--port", str(port), "--api-port", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)

    holder = psycopg.connect(dsn, autocommit=True)
    lock = "SELECT pg_advisory_lock(hashtextextended('live|BTC/USDT', 0))"
    unlock = "SELECT pg_advisory_unlock_all()"
    # 1. tp down during a batch
    first = feed(2)
    holder.execute(lock)
    proc = up()
    try:
        _wait(lambda: _waiting_on_lock(holder) > 0, 180, "a live run blocked on the symbol's lock", proc)
        # its STARTED status can reach the run storage a moment after its op blocks (seen once under a loaded suite)
        _wait(lambda: [r.status for r in _runs(home, in_flight)] == [DagsterRunStatus.STARTED], 30,
              "the blocked live run recorded as STARTED", proc)
        down = subprocess.run([sys.executable, "-m", "trading_platform.cli", "down", "--json"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert _runs(home, in_flight) == [], [(r.run_id, r.status) for r in _runs(home)]
    holder.execute(unlock)
    # 2. a batch in flight, then kill -9 of everything
    second = feed(1)
    holder.execute(lock)
    proc = up()
    _wait(lambda: _waiting_on_lock(holder) > 0, 180, "a live run blocked on the symbol's lock", proc)
    assert _kill_everything(home) >= 4  # tp up, dagster dev's services, the run
    proc.wait(timeout=30)
    left = {r.run_id for r in _runs(home, in_flight)}  # the blocked run (and the daemon's retry of the one
    assert left, [(r.run_id, r.status) for r in _runs(home)]  # `tp down` ended, if it was launching)
    holder.execute(unlock)
    # 3. the next start: the leftover marked failed, its batch re-requested and every event predicted
    proc = up()
    try:
        _wait(lambda: left <= {r.run_id for r in _runs(home, [DagsterRunStatus.FAILURE])}, 60,
              "the leftover runs marked failed", proc)
        with psycopg.connect(dsn) as c:
            def all_done():
                return c.execute("SELECT count(*) FROM market_event_queue WHERE status <> 'done'").fetchone()[0] == 0
            _wait(all_done, 180, "every event predicted after the restart", proc)
            done = c.execute("SELECT count(*) FROM market_event_queue WHERE status = 'done'").fetchone()[0]
        assert done == len(first) + len(second)
    finally:
        subprocess.run([sys.executable, "-m", "trading_platform.cli", "down"], env=env, capture_output=True,
                       timeout=120)
        proc.wait(timeout=60)
        holder.close()
    assert _runs(home, in_flight) == []


def test_tp_up_creates_a_fresh_mlflow_database_before_its_services_race_to(tmp_path):
    """`tp up` on a first start: the MLflow UI and tp serve's registry reader (two processes) open the same
    empty database at once, and two alembic migrations of one database leave one of them dead ("Online
    migration expected to match one row"). `tp up` creates the tables first; then processes opening it at
    once all succeed."""
    from trading_platform.cli.supervisor import ensure_mlflow_schema

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ensure_mlflow_schema(uri)
    reader = ("import sys; from mlflow.tracking import MlflowClient; u = sys.argv[1]; "
              "MlflowClient(tracking_uri=u, registry_uri=u).search_registered_models(max_results=1); "
              "MlflowClient(tracking_uri=u).search_experiments(max_results=1)")
    procs = [subprocess.Popen([sys.executable, "-c", reader, uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(4)]
    outs = [(p.communicate(timeout=180)[0], p.returncode) for p in procs]
    failed = [out for out, rc in outs if rc != 0]
    assert not failed, failed[0][-2000:]
    ensure_mlflow_schema(f"file://{tmp_path}/mlruns")  # a file store: nothing to create, no error
    assert not (tmp_path / "mlruns").exists()


_REWRITER = """
import sys
from trading_platform.instance import ensure_dagster_home
print("ready", flush=True)
for i in range(int(sys.argv[1])):
    ensure_dagster_home(run_log_level=("DEBUG", "INFO")[i % 2])  # `tp up --verbose`, then a plain `tp up`
"""


def test_processes_reading_dagster_yaml_while_tp_rewrites_it_never_see_half_a_file(tp_env):
    """`tp up` starts the UI, the daemon, the API and the live services, each making sure of the managed
    dagster.yaml (rewritten when the log level changes) while the others load their Dagster instance from it: a
    reader must see the old configuration or the new one, never a truncated file (CI once saw a tool call of
    `tp serve` fail with KeyError: 'config' from an instance loaded from half a dagster.yaml)."""
    from trading_platform.instance import instance_yaml

    home, whole = Path(tp_env["DAGSTER_HOME"]), {instance_yaml("DEBUG"): "DEBUG", instance_yaml("INFO"): "INFO"}
    writer = subprocess.Popen([sys.executable, "-c", _REWRITER, "3000"], env=tp_env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        reads, levels = 0, set()
        while writer.poll() is None or reads == 0:
            try:
                text = (home / "dagster.yaml").read_text()
            except FileNotFoundError:
                continue
            assert text in whole, f"half a dagster.yaml was read ({len(text)} characters): {text[-200:]!r}"
            levels.add(whole[text])
            reads += 1
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode in (0, -9) and reads > 100 and levels == {"DEBUG", "INFO"}


def test_threads_setting_up_dagster_and_mlflow_storage_at_once_both_succeed(tmp_path, monkeypatch):
    """tp serve's write tools make a Dagster instance while its metrics' registry thread makes the first MLflow
    client of a fresh store: both set up SQLite tables with alembic, whose module-level context two threads
    cannot share (a tool failed with KeyError: 'config'; here, before the fix, 15 failures in 10 rounds: 'no such
    table: metrics', KeyError: 'script'). Each round: a fresh DAGSTER_HOME and MLflow store, one thread each."""
    import threading

    from trading_platform.instance import get_instance
    from trading_platform.resources.mlflow import MLflowResource

    monkeypatch.setenv("TP_EMBEDDED", "1")
    failures = []

    def attempt(what, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            failures.append(f"{what}: {e!r}"[:300])

    def dagster():
        inst = get_instance()
        inst.get_dynamic_partitions("symbol")
        inst.dispose()

    for i in range(6):
        home = tmp_path / str(i)
        monkeypatch.setenv("TP_HOME", str(home))
        monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
        uri = f"sqlite:///{home}/mlflow.db"
        home.mkdir()
        threads = [threading.Thread(target=attempt, args=("mlflow", lambda: MLflowResource(tracking_uri=uri).client()
                                                          .search_registered_models(max_results=1))),
                   threading.Thread(target=attempt, args=("dagster", dagster))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert (home / "mlflow.db").exists() and (home / "dagster" / "dagster.yaml").exists()
    assert not failures, failures

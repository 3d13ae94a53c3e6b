"""A run launcher that starts live runs by forking a warm process (``run_launcher`` in ``dagster.yaml``).

Every run is a new process. The default launcher starts it cold: a fresh interpreter imports Dagster and
the code location (about 2-3 s here), then the live op imports what its models need (XGBoost, LightGBM,
hmmlearn, torch, and neuralforecast with Lightning: about 9 s on this 2-core machine) and loads them,
for a run whose own work takes a second or two. ``PreforkRunLauncher`` keeps one warm process per daemon
(started on the first live launch) that has imported the code location and those libraries; each run
of the configured jobs
(``live_predictions_job``) is a ``fork`` of it, which executes the run exactly as a run worker does
(``core_execute_run``: the same events, logs, retries and run monitoring) in a fraction of a second.
Runs of every other job, and live runs while the warm process is starting or gone, are launched by
the default launcher. The warm process exits when the daemon does, and when the platform's code
changes on disk (a reload), so no run executes stale code: the next launch starts a new one.

Termination (the UI's "terminate") sends SIGINT to the run's process, which Dagster turns into a
clean cancellation. Forking is safe because the warm process only imports: it never runs a computation
nor loads a model (loading the TCN starts torch's OpenMP pool, and a child forked after that hangs in
its first convolution); each run loads its models from the on-disk cache (about 0.25 s for all families,
the libraries being imported).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from dagster import Array, Field
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

log = logging.getLogger(__name__)
PID_TAG = "tp/worker_pid"
PACKAGE = Path(__file__).resolve().parents[1]
DEFAULT_JOBS = ["live_predictions_job"]
DEFAULT_PRELOAD = [
    "trading_platform.live.process", "trading_platform.features.pipeline", "trading_platform.models.scoring",
    "trading_platform.models.predict", "trading_platform.core.calendars", "xgboost", "lightgbm", "cloudpickle",
    "hmmlearn.hmm", "torch", "neuralforecast", "trading_platform.models.forecast.nhits",
    "trading_platform.models.patterns.tcn", "trading_platform.models.patterns.scan",
]


class PreforkRunLauncher(DefaultRunLauncher):
    """The default launcher, except for the runs of ``jobs``: forked from a warm process (see the module)."""

    def __init__(self, inst_data=None, jobs: list[str] | None = None, preload: list[str] | None = None):
        super().__init__(inst_data=inst_data)
        self._jobs = set(DEFAULT_JOBS if jobs is None else jobs)
        self._preload = list(DEFAULT_PRELOAD if preload is None else preload)
        self._warm: _WarmProcess | None = None
        self._lock = threading.Lock()

    @classmethod
    def config_type(cls):
        return {
            "jobs": Field(Array(str), is_required=False, default_value=DEFAULT_JOBS,
                          description="jobs whose runs are forked from the warm process"),
            "preload": Field(Array(str), is_required=False, default_value=DEFAULT_PRELOAD,
                             description="modules the warm process imports before it forks"),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context) -> None:
        run = context.dagster_run
        if run.job_name in self._jobs and run.job_code_origin is not None:
            pid = self._fork(run)
            if pid:
                self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid)})
                self._run_ids.add(run.run_id)
                return
        super().launch_run(context)

    def _fork(self, run) -> int | None:
        from dagster._serdes import serialize_value

        with self._lock:
            if self._warm is None or not self._warm.alive():
                self._warm = _WarmProcess(self._preload)  # ready in a few seconds; until then, the default way
                return None
            try:
                reply = self._warm.request({"run_id": run.run_id,
                                            "instance_ref": serialize_value(self._instance.get_ref())})
            except OSError as e:
                log.warning("warm live process unavailable (%s): launching run %s the default way", e, run.run_id)
                self._warm.stop()
                self._warm = None
                return None
            if reply.get("stale"):  # the code changed on disk: a new warm process for the next runs
                self._warm.stop()
                self._warm = None
                return None
            return int(reply["pid"]) if reply.get("pid") else None

    def terminate(self, run_id) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.is_finished or PID_TAG not in run.tags:
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(run.tags[PID_TAG]), signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def dispose(self) -> None:
        if self._warm is not None:
            self._warm.stop()


def _read_message(sock) -> dict:
    """One JSON message, newline-terminated, from a socket (an empty dict if the peer closed first)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return json.loads(data or b"{}")


class _WarmProcess:
    """The launcher's side: starts ``python -m trading_platform.live.prefork SOCKET`` and talks to it."""

    def __init__(self, preload: list[str]):
        self.dir = Path(tempfile.mkdtemp(prefix="tp-prefork-"))
        self.path = self.dir / "warm.sock"
        self.proc = subprocess.Popen([sys.executable, "-m", "trading_platform.live.prefork", str(self.path),
                                      str(os.getpid()), json.dumps(preload)], stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None and self.path.exists()

    def request(self, msg: dict, timeout: float = 30.0) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.path))
            s.sendall(json.dumps(msg).encode() + b"\n")
            return _read_message(s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for p in (self.path, self.dir):
            try:
                p.unlink() if p.is_file() or p.is_socket() else p.rmdir()
            except OSError:
                pass


# ---- the warm process ----------------------------------------------------------------------------------
def _code_stamp() -> float:
    return max((p.stat().st_mtime for p in PACKAGE.rglob("*.py")), default=0.0)


def _run_child(req: dict) -> None:
    """In the forked child: execute the run as a run worker does; never returns."""
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from dagster import DagsterInstance
        from dagster._core.events import EngineEventData
        from dagster._core.instance.ref import InstanceRef
        from dagster._grpc.impl import core_execute_run
        from dagster._serdes import deserialize_value
        from dagster._utils.hosted_user_process import recon_job_from_origin
        from dagster._utils.interrupts import capture_interrupts

        with DagsterInstance.from_ref(deserialize_value(req["instance_ref"], InstanceRef)) as instance:
            run = instance.get_run_by_id(req["run_id"])
            recon = recon_job_from_origin(run.job_code_origin)
            instance.report_engine_event(f"Started process for run (pid: {os.getpid()}), forked from the warm live "
                                         "process", run, EngineEventData.in_process(os.getpid()))
            with capture_interrupts():
                for _ in core_execute_run(recon, run, instance, inject_env_vars=False):
                    pass
    except BaseException:  # noqa: BLE001 - reported in the run's event log by core_execute_run where it can be
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(path: str, parent: int, preload: list[str]) -> None:
    import importlib

    import trading_platform.definitions  # noqa: F401 - the code location, as a run worker loads it
    from dagster._grpc.impl import core_execute_run  # noqa: F401
    from dagster._utils.hosted_user_process import recon_job_from_origin  # noqa: F401

    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a missing optional library: the run imports what it needs
            log.warning("warm live process: cannot import %s: %s", name, e)
    stamp = _code_stamp()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped as they exit
    tmp = f"{path}.{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(tmp)
    os.replace(tmp, path)  # the launcher sees the socket only once everything is imported
    srv.listen(16)
    srv.settimeout(2.0)
    while os.getppid() == parent:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        with conn:
            conn.settimeout(30)
            req = _read_message(conn)
            if _code_stamp() != stamp:
                conn.sendall(b'{"stale": true}\n')
                break
            pid = os.fork()
            if pid == 0:
                srv.close()
                _run_child(req)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    srv.close()
    try:
        os.unlink(path)
    except OSError:
        pass


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    serve(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))

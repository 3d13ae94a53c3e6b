"""A run launcher that starts live runs by forking a warm process (``run_launcher`` in both instance files).

Every run is a new process. Started cold, a fresh interpreter imports Dagster and the code location (about
2-3 s here), then the live op imports what its models need (XGBoost, LightGBM, hmmlearn, torch, and
neuralforecast with Lightning: about 9 s on this 2-core machine) and loads them, for a run whose own work takes
a second or two; in a container per run (the production ``DockerRunLauncher``) add the container's start.
``PreforkRunLauncher`` keeps a warm process that has imported the code location and those libraries; each run
of the configured jobs (``live_predictions_job``) is a ``fork`` of it, which executes the run exactly as a run
worker does (``core_execute_run``: the same events, logs, retries and run monitoring) in a fraction of a
second. Every other run, and a live run while the warm process is starting or unreachable, goes to the
``fallback`` launcher (default: Dagster's ``DefaultRunLauncher``; in ``docker/dagster.yaml`` the
``DockerRunLauncher``).

Where the warm process lives:

- embedded (no ``address``): the launcher starts it on the first live launch, as a child of the daemon, and
  talks to it over a Unix socket; it exits when the daemon does and when the platform's code changes on disk
  (a reload), so no run executes stale code: the next launch starts a new one.
- deployed (``address: host:port``): ``tp live runner --listen`` in its own service of the user-code image
  (``docker/compose.yaml``: ``live_runner``, holding one GPU) serves launches over TCP. It executes a run only
  if the run exists in its own instance, is STARTING and is of a configured job: it ignores everything else a
  client sends.

Dead runs: a forked run killed by the OOM killer or a ``kill -9`` cannot report its end. The launcher tags each
forked run with its process (``tp/worker_pid`` and ``tp/worker_started``, the process's start time, so a
reused pid is not mistaken for it) and answers Dagster's run monitoring (``check_run_worker_health``): the
daemon marks a run whose process is gone as failed within ``run_monitoring.poll_interval_seconds``, and the
run's retries and the live sensor take its batch again. Runs of the fallback are checked by the fallback
where it can (the ``DockerRunLauncher`` asks Docker), else, for a code server on this host, by the process
the run worker reported in its "Started process for run (pid: N)" event.

Termination (the UI's "terminate", a run's ``dagster/max_runtime``) sends SIGINT to the run's process, which
Dagster turns into a clean cancellation; SIGTERM does the same. A process that may not reach the fallback's runs
(``TP_TERMINATE_VIA_DAEMON=1``: the compose webserver, which holds no Docker socket) only tags the run
(``tp/terminate_requested``); the daemon's run monitoring passes it to this launcher's health check, where the
fallback terminates it (the DockerRunLauncher stops its container) within ``poll_interval_seconds``. Forking is safe because the warm process only
imports: it never runs a computation nor loads a model (loading the TCN starts torch's OpenMP pool, and a child
forked after that hangs in its first convolution); each run loads its models from the on-disk cache (about
0.25 s for all families, the libraries being imported).
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
import time
from pathlib import Path

from dagster import Array, Field, Permissive, Shape, StringSource
from dagster._core.launcher.base import CheckRunHealthResult, RunLauncher, WorkerStatus
from dagster._serdes import ConfigurableClass, ConfigurableClassData

log = logging.getLogger(__name__)
PID_TAG = "tp/worker_pid"
STARTED_TAG = "tp/worker_started"  # the process's start time in clock ticks since boot (/proc/<pid>/stat)
RUNNER_TAG = "tp/worker_runner"    # "local" (this host) or the address of the `tp live runner` that forked it
# a termination asked for where the fallback launcher cannot reach the runs (the compose webserver has no Docker
# socket: TP_TERMINATE_VIA_DAEMON=1); the daemon's run monitoring finds it and its launcher stops the run
TERMINATE_TAG = "tp/terminate_requested"
VIA_DAEMON_ENV = "TP_TERMINATE_VIA_DAEMON"
LOCAL = "local"
PACKAGE = Path(__file__).resolve().parents[1]
DEFAULT_JOBS = ["live_predictions_job"]
DEFAULT_PRELOAD = [
    "trading_platform.live.process", "trading_platform.features.pipeline", "trading_platform.models.scoring",
    "trading_platform.models.predict", "trading_platform.core.calendars", "xgboost", "lightgbm", "cloudpickle",
    "hmmlearn.hmm", "torch", "neuralforecast", "trading_platform.models.forecast.nhits",
    "trading_platform.models.patterns.tcn", "trading_platform.models.patterns.scan",
]
DEFAULT_FALLBACK = {"module": "dagster", "class": "DefaultRunLauncher", "config": {}}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
LAUNCH_TIMEOUT_S = 15.0
REQUEST_DEADLINE_S = 5.0  # a runner drops a client that has not sent its whole request by then


def worker_tags(pid: int, started: str, runner: str) -> dict:
    return {PID_TAG: str(pid), STARTED_TAG: str(started), RUNNER_TAG: runner}


# ---- processes, by pid and start time --------------------------------------------------------------------
def stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state, ppid, pgrp, ...) of a live process; None when there is no such
    process or it has exited (a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    except (OSError, ValueError):
        return None
    return fields if fields and fields[0] not in ("Z", "X") else None


def start_ticks(pid: int) -> str | None:
    """The start time of a live process (clock ticks since boot, /proc/<pid>/stat field 22), or None."""
    fields = stat_fields(pid)
    return fields[19] if fields else None


def started_at(pid: int) -> float | None:
    """The start time of a live process as a Unix time, or None."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    try:
        btime = next(float(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                     if ln.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    return btime + int(ticks) / os.sysconf("SC_CLK_TCK")


def worker_status(pid: int, started: str | None) -> tuple[str, str]:
    """("RUNNING" | "FAILED", why) of the process ``pid`` that started at ``started`` (ticks)."""
    now = start_ticks(pid)
    if now is None:
        return "FAILED", f"the run's process (pid {pid}) is gone: killed, or it exited without reporting"
    if started and now != started:
        return "FAILED", f"the run's process (pid {pid}) is gone; the pid now belongs to another process"
    return "RUNNING", f"pid {pid} is running"


def _read_message(sock, deadline: float | None = None) -> dict:
    """One JSON message, newline-terminated, from a socket (an empty dict if the peer closed first); with
    ``deadline`` (a monotonic time), a peer that has not sent it all by then is dropped (socket.timeout)."""
    data = b""
    while not data.endswith(b"\n"):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("request not received in time")
            sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > 1 << 20:
            raise ValueError("message over 1 MiB")
    return json.loads(data or b"{}")


def request(address: str | Path, msg: dict, timeout: float = 30.0) -> dict:
    """One request to a warm process: ``address`` is a Unix socket path or ``host:port``."""
    if isinstance(address, Path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = str(address)
    else:
        host, _, port = address.rpartition(":")
        s = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
        target = (host.strip("[]"), int(port))
    with s:
        s.settimeout(timeout)
        s.connect(target)
        s.sendall(json.dumps(msg).encode() + b"\n")
        return _read_message(s)


def parse_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. live_runner:4001)")
    return value


# ---- the launcher (in the daemon, the webserver, and wherever the instance launches or terminates runs) -------
def _via_daemon() -> bool:
    return os.environ.get(VIA_DAEMON_ENV, "").strip() == "1"


class PreforkRunLauncher(RunLauncher, ConfigurableClass):
    """Runs of ``jobs`` forked from a warm process; every other run to ``fallback`` (see the module)."""

    def __init__(self, inst_data=None, jobs: list[str] | None = None, preload: list[str] | None = None,
                 address: str | None = None, fallback: dict | None = None):
        import yaml

        super().__init__()
        self._inst_data = inst_data
        self._jobs = set(DEFAULT_JOBS if jobs is None else jobs)
        self._preload = list(DEFAULT_PRELOAD if preload is None else preload)
        self._address = parse_address(address) if address else None
        fb = fallback or DEFAULT_FALLBACK
        self._fallback = ConfigurableClassData(fb["module"], fb["class"], yaml.safe_dump(fb.get("config") or {})
                                               ).rehydrate(as_type=RunLauncher)
        self._warm: _WarmProcess | None = None
        self._lock = threading.Lock()
        self._forked: set[str] = set()
        self._pids: dict[str, tuple[int, str]] = {}  # fallback runs: run id -> (pid, start ticks or "gone")
        self._unreachable_logged = 0.0

    @property
    def inst_data(self):
        return self._inst_data

    @classmethod
    def config_type(cls):
        return {
            "jobs": Field(Array(str), is_required=False, default_value=DEFAULT_JOBS,
                          description="jobs whose runs are forked from the warm process"),
            "preload": Field(Array(str), is_required=False, default_value=DEFAULT_PRELOAD,
                             description="modules the warm process imports before it forks (embedded only: a "
                                         "`tp live runner` takes them from its own command line)"),
            "address": Field(StringSource, is_required=False,
                             description="host:port of a `tp live runner --listen` (the deployment's live_runner "
                                         "service); without it, a warm process on this host"),
            "fallback": Field(Shape({"module": str, "class": str, "config": Field(Permissive(), is_required=False)}),
                              is_required=False,
                              description="the launcher of every other run (default dagster.DefaultRunLauncher)"),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    @property
    def fallback(self) -> RunLauncher:
        return self._fallback

    def register_instance(self, instance) -> None:
        super().register_instance(instance)
        if not self._fallback.has_instance:
            self._fallback.register_instance(instance)

    # -- launching
    def launch_run(self, context) -> None:
        run = context.dagster_run
        if run.job_name in self._jobs and run.job_code_origin is not None:
            got = self._fork(run)
            if got:  # the child has tagged the run with its process (worker_tags) before starting it
                if len(self._forked) > 1000:  # only join() reads it (tests)
                    self._forked.clear()
                self._forked.add(run.run_id)
                return
        self._fallback.launch_run(context)

    def _fork(self, run) -> dict | None:
        if self._address:
            try:
                reply = request(self._address, {"op": "launch", "run_id": run.run_id,
                                                "not_after": time.time() + LAUNCH_TIMEOUT_S - 3}, timeout=LAUNCH_TIMEOUT_S)
            except OSError as e:
                if time.monotonic() - self._unreachable_logged > 60:  # once a minute, not once a batch
                    self._unreachable_logged = time.monotonic()
                    log.warning("live runner %s unreachable (%s): live runs are launched the default way",
                                self._address, e)
                return None
            if reply.get("error"):
                log.warning("live runner %s refused run %s (%s): launching it the default way", self._address,
                            run.run_id, reply["error"])
            return reply if reply.get("pid") else None
        from dagster._serdes import serialize_value

        with self._lock:
            if self._warm is None or not self._warm.alive():
                self._warm = _WarmProcess(self._preload)  # ready in a few seconds; until then, the default way
                return None
            try:
                reply = self._warm.request({"op": "launch", "run_id": run.run_id,
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
            return reply if reply.get("pid") else None

    # -- health, for run monitoring
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        tags = run.tags
        if TERMINATE_TAG in tags and PID_TAG not in tags and not _via_daemon():
            # asked for by a process without access to the runs (the webserver): done here, by the daemon's launcher
            stopped = self._fallback.terminate(run.run_id)
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"terminating at the request of {tags[TERMINATE_TAG]}"
                                        + ("" if stopped else ": the run's worker could not be reached"))
        if PID_TAG in tags:
            runner = tags.get(RUNNER_TAG, LOCAL)
            try:
                if runner == LOCAL:
                    status, msg = worker_status(int(tags[PID_TAG]), tags.get(STARTED_TAG))
                else:
                    reply = request(runner, {"op": "health", "pid": int(tags[PID_TAG]),
                                             "started": tags.get(STARTED_TAG)}, timeout=5)
                    status, msg = reply["status"], reply.get("msg")
                result = WorkerStatus(status)
            except Exception as e:  # noqa: BLE001 - unreachable or a bad answer: the run's max runtime still ends it
                return CheckRunHealthResult(WorkerStatus.RUNNING, f"live runner {runner}: cannot tell ({e})",
                                            transient=True)
            return CheckRunHealthResult(result, msg, run_worker_id=tags[PID_TAG])
        if self._fallback.supports_check_run_worker_health:
            return self._fallback.check_run_worker_health(run)
        return self._default_worker_health(run)

    def _default_worker_health(self, run) -> CheckRunHealthResult:
        """A run of the DefaultRunLauncher: its worker is a child of the code server; on this host, the process it
        reported in its 'Started process for run (pid: N)' event."""
        from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
        from dagster._core.storage.tags import GRPC_INFO_TAG

        info = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}")
        if not isinstance(self._fallback, DefaultRunLauncher) or (info.get("host") not in LOCAL_HOSTS
                                                                  and not info.get("socket")):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run's worker is not on this host: cannot tell")
        if self._pids.get(run.run_id) is None:
            if len(self._pids) > 10_000:
                self._pids.clear()
            got = self._reported_pid(run.run_id)
            if got is None:
                return CheckRunHealthResult(WorkerStatus.RUNNING, "no process reported yet")
            pid, at = got
            began = started_at(pid)
            # first look: the process must have started by the time it reported (else the pid is a later one's);
            # from then on its start ticks identify it (a wall-clock step cannot change them)
            ticks = start_ticks(pid) if began is not None and began <= at + 5 else None
            self._pids[run.run_id] = (pid, ticks or "gone")
        pid, ticks = self._pids[run.run_id]
        status, msg = worker_status(pid, ticks) if ticks != "gone" else ("FAILED", f"the run's process (pid {pid}) "
                                                                                  "is gone")
        if status == "FAILED":
            self._pids.pop(run.run_id, None)
        return CheckRunHealthResult(WorkerStatus(status), msg, run_worker_id=str(pid))

    def _reported_pid(self, run_id: str) -> tuple[int, float] | None:
        from dagster import DagsterEventType

        records = self._instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=50).records
        for rec in records:
            entry = rec.event_log_entry
            if not (entry.message or "").startswith("Started process for run"):
                continue
            meta = entry.dagster_event.engine_event_data.metadata if entry.dagster_event else {}
            pid = getattr(meta.get("pid"), "value", None)
            if pid and str(pid).isdigit():
                return int(pid), entry.timestamp
        return None

    def get_run_worker_debug_info(self, run, include_container_logs: bool | None = True) -> str | None:
        if PID_TAG in run.tags:
            return f"forked run worker: pid {run.tags[PID_TAG]} on {run.tags.get(RUNNER_TAG, LOCAL)}"
        return self._fallback.get_run_worker_debug_info(run, include_container_logs=include_container_logs)

    # -- termination and shutdown
    def terminate(self, run_id) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is not None and not run.is_finished and PID_TAG not in run.tags and _via_daemon():
            # this process may not reach the run's worker (no Docker socket): the daemon's launcher will, at its
            # next run-monitoring pass (check_run_worker_health)
            from datetime import datetime, timezone

            self._instance.add_run_tags(run_id, {TERMINATE_TAG: datetime.now(timezone.utc).isoformat()})
            self._instance.report_engine_event(
                "termination requested: the daemon's run launcher stops the run at its next run-monitoring pass",
                run, cls=self.__class__)
            return True
        if run is None or run.is_finished or PID_TAG not in run.tags:
            return self._fallback.terminate(run_id)
        self._instance.report_run_canceling(run)
        pid, started, runner = int(run.tags[PID_TAG]), run.tags.get(STARTED_TAG), run.tags.get(RUNNER_TAG, LOCAL)
        if runner != LOCAL:
            try:
                return bool(request(runner, {"op": "terminate", "pid": pid, "started": started}, timeout=5).get("ok"))
            except OSError:
                return False
        return interrupt(pid, started)

    def join(self, timeout: int = 30) -> None:
        self._fallback.join(timeout)
        deadline = time.monotonic() + timeout
        while self.has_instance and time.monotonic() < deadline:
            self._forked = {i for i in self._forked
                            if (r := self._instance.get_run_by_id(i)) is not None and not r.is_finished}
            if not self._forked:
                return
            time.sleep(0.05)

    def dispose(self) -> None:
        if self._warm is not None:
            self._warm.stop()
        self._fallback.dispose()


KILL_AFTER_S = 30.0  # a run that has not ended this long after its interrupt (stuck in C code) is SIGKILLed


def interrupt(pid: int, started: str | None, sig: int = signal.SIGINT, kill_after: float | None = KILL_AFTER_S) -> bool:
    """Send ``sig`` to the run's process if it is still that process (not a later one with the same pid); if it is
    still there ``kill_after`` seconds later (a step stuck in native code ignores the interrupt), SIGKILL it."""
    if worker_status(pid, started)[0] != "RUNNING":
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    if kill_after:
        def _escalate():
            time.sleep(kill_after)
            if worker_status(pid, started)[0] == "RUNNING":
                log.warning("run process %d still running %.0f s after its interrupt: killed", pid, kill_after)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        threading.Thread(target=_escalate, daemon=True, name=f"tp-kill-{pid}").start()
    return True


class _WarmProcess:
    """The embedded launcher's side: starts ``python -m trading_platform.live.prefork SOCKET`` and talks to it."""

    def __init__(self, preload: list[str]):
        self.dir = Path(tempfile.mkdtemp(prefix="tp-prefork-"))
        self.path = self.dir / "warm.sock"
        self.proc = subprocess.Popen([sys.executable, "-m", "trading_platform.live.prefork", str(self.path),
                                      str(os.getpid()), json.dumps(preload)], stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None and self.path.exists()

    def request(self, msg: dict, timeout: float = 30.0) -> dict:
        return request(self.path, msg, timeout)

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


# ---- the warm process (embedded: a child of the daemon; deployed: `tp live runner`) ----------------------------
def _code_stamp() -> float:
    return max((p.stat().st_mtime for p in PACKAGE.rglob("*.py")), default=0.0)


def _run_child(req: dict) -> None:
    """In the forked child: execute the run as a run worker does; never returns."""
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from dagster import DagsterInstance
        from dagster._core.events import EngineEventData
        from dagster._core.instance.ref import InstanceRef
        from dagster._grpc.impl import core_execute_run
        from dagster._serdes import deserialize_value
        from dagster._utils.hosted_user_process import recon_job_from_origin
        from dagster._utils.interrupts import capture_interrupts, setup_interrupt_handlers

        setup_interrupt_handlers()  # SIGTERM (docker stop, tp down) ends the run as SIGINT does: reported
        ref = req.get("instance_ref")
        instance = (DagsterInstance.from_ref(deserialize_value(ref, InstanceRef)) if ref else DagsterInstance.get())
        with instance:
            run = instance.get_run_by_id(req["run_id"])
            if req.get("runner"):  # before the run is STARTED: run monitoring never sees it without them
                instance.add_run_tags(run.run_id, worker_tags(os.getpid(), start_ticks(os.getpid()) or "",
                                                              req["runner"]))
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


class _Server:
    """Answers launch, health, terminate and ping requests; forks one child per launched run."""

    def __init__(self, jobs: set[str] | None, own_instance: bool, address: str = LOCAL):
        self.jobs = jobs
        self.own_instance = own_instance  # a runner: its own DAGSTER_HOME instance, never one a client sends
        self.address = address  # what the runs are tagged with: where to ask about them
        self.children: dict[int, str] = {}  # pid -> start ticks
        self.stamp = None if own_instance else _code_stamp()
        self.stop = False
        self._instance = None
        self.sockets: list = []  # closed in a forked child (it must not hold the listening port)

    def handle(self, conn) -> None:
        try:
            req = _read_message(conn, time.monotonic() + REQUEST_DEADLINE_S)
            if not isinstance(req, dict):
                raise ValueError("a request is a JSON object")
        except (OSError, ValueError, RecursionError) as e:
            log.warning("warm live process: unreadable request (%s)", e)
            return
        self.sockets = [*self.sockets[:1], conn]
        try:
            reply = self.answer(req)
        except Exception as e:  # noqa: BLE001 - one bad request (or a database blip) must not end the runs in flight
            log.warning("warm live process: request %s failed: %s: %s", req.get("op"), type(e).__name__, e)
            reply = {"error": f"{type(e).__name__}: {e}"}
        if reply is not None:
            conn.settimeout(5)
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def answer(self, req: dict) -> dict | None:
        op = req.get("op", "launch")
        self.children = {p: t for p, t in self.children.items() if start_ticks(p) == t}
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "runs": len(self.children)}
        if op == "health":
            status, msg = worker_status(int(req["pid"]), req.get("started"))
            return {"status": status, "msg": msg}
        if op == "terminate":
            pid, started = int(req["pid"]), req.get("started")
            if self.children.get(pid) != started:
                return {"ok": False, "error": f"pid {pid} is not a running child of this runner"}
            return {"ok": interrupt(pid, started)}
        if op != "launch" or not isinstance(req.get("run_id"), str):
            return {"error": f"unknown request {op!r}"}
        if self.stamp is not None and _code_stamp() != self.stamp:
            self.stop = True
            return {"stale": True}
        if isinstance(req.get("not_after"), (int, float)) and time.time() > req["not_after"]:
            return {"error": "the request came too late: the launcher has given up on it"}
        if self.own_instance:
            why = self._refuse(req["run_id"])
            if why:
                return {"error": why}
            req = {"run_id": req["run_id"]}
        child_req = {**req, "runner": self.address}
        pid = os.fork()
        if pid == 0:
            for sock in self.sockets:
                try:
                    sock.close()
                except OSError:
                    pass
            _run_child(child_req)
        started = start_ticks(pid) or ""
        self.children[pid] = started
        return {"pid": pid, "started": started, "address": self.address}

    def _refuse(self, run_id: str) -> str | None:
        from dagster import DagsterInstance, DagsterRunStatus

        if self._instance is None:
            self._instance = DagsterInstance.get()
        run = self._instance.get_run_by_id(run_id)
        if run is None:
            return f"no run {run_id} in this runner's instance"
        if run.status != DagsterRunStatus.STARTING:
            return f"run {run_id} is {run.status.value}, not STARTING"
        if self.jobs is not None and run.job_name not in self.jobs:
            return f"job {run.job_name} is not one this runner forks"
        if run.job_code_origin is None:
            return f"run {run_id} has no code origin"
        return None

    def shutdown(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the runs in flight (each ends as an interrupted run, reported), wait for them, then SIGKILL
        what is left (run monitoring fails those runs)."""
        for pid, started in list(self.children.items()):
            interrupt(pid, started, signal.SIGTERM, kill_after=None)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(start_ticks(p) == t for p, t in self.children.items()):
            time.sleep(0.1)
        for pid, started in self.children.items():
            if start_ticks(pid) == started:
                os.kill(pid, signal.SIGKILL)


def _warm_up(preload: list[str]) -> None:
    import importlib

    import trading_platform.definitions  # noqa: F401 - the code location, as a run worker loads it
    from dagster._grpc.impl import core_execute_run  # noqa: F401
    from dagster._utils.hosted_user_process import recon_job_from_origin  # noqa: F401

    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a missing optional library: the run imports what it needs
            log.warning("warm live process: cannot import %s: %s", name, e)


def serve(path: str, parent: int, preload: list[str]) -> None:
    """The embedded warm process: a Unix socket, until its parent (the daemon) exits or the code changes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C of `tp up` reaches the group: the daemon ends us
    _warm_up(preload)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped as they exit
    server = _Server(jobs=None, own_instance=False)
    tmp = f"{path}.{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.sockets = [srv]
    srv.bind(tmp)
    os.replace(tmp, path)  # the launcher sees the socket only once everything is imported
    _accept(srv, server, lambda: os.getppid() == parent)
    try:
        os.unlink(path)
    except OSError:
        pass


def run_runner(listen: str, jobs: list[str], preload: list[str]) -> None:
    """`tp live runner` (which checks DAGSTER_HOME's instance first): the deployed warm process, on TCP, until
    SIGTERM or SIGINT (then the runs in flight are interrupted and reported before it exits)."""
    host, _, port = parse_address(listen).rpartition(":")
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # docker stop during the warm-up: exit right after it
        signal.signal(sig, lambda *_: stopping.set())
    _warm_up(preload)
    if stopping.is_set():
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    host = host.strip("[]")
    # the runs are tagged with this runner's own address (not a service name that may have several replicas)
    advertised = host if host not in ("0.0.0.0", "::", "") else socket.gethostbyname(socket.gethostname())
    server = _Server(jobs=set(jobs), own_instance=True,
                     address=f"[{advertised}]:{port}" if ":" in advertised else f"{advertised}:{port}")
    srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    server.sockets = [srv]
    log.warning("live runner: listening on %s (pid %d), forking runs of %s", listen, os.getpid(), ", ".join(jobs))
    _accept(srv, server, lambda: not stopping.is_set())
    server.shutdown()


def _accept(srv, server: _Server, go_on) -> None:
    srv.listen(16)
    srv.settimeout(1.0)
    try:
        while go_on() and not server.stop:
            try:
                conn, _ = srv.accept()
            except (socket.timeout, InterruptedError):
                continue
            with conn:
                try:
                    server.handle(conn)
                except OSError as e:
                    log.warning("warm live process: request failed (%s)", e)
    finally:
        srv.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    serve(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))

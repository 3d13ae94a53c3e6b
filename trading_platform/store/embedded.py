"""The embedded PostgreSQL server (pgserver) under ``$TP_HOME/pg``.

Started on first use and left running (it serves every Dagster run process
and the CLI); ``tp down`` stops it. It listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

DATABASE = "trading"
# settings for a single-machine store that takes bulk loads
_SERVER_SETTINGS = {
    "max_wal_size": "'4GB'",
    "shared_buffers": "'256MB'",
    "work_mem": "'32MB'",
    "maintenance_work_mem": "'256MB'",
}


def _pgserver():
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        import pgserver._commands  # noqa: F401 (pg_ctl)

    return pgserver


def _server(pgdata: Path):
    return _pgserver().get_server(pgdata, cleanup_mode=None)


def ensure_embedded(pgdata: Path) -> str:
    """Start (or reuse) the embedded server; return a DSN for the platform database.

    A server that was killed (``kill -9``, a crash, a power cut) leaves its lock file behind,
    naming a process that is gone or not reaped yet: the lock is cleared and the server
    restarted (PostgreSQL recovers from its WAL), so the first command after a crash works.
    """
    import psycopg

    from ..errors import StoreUnavailable

    pgdata = Path(pgdata)
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # TP_HOME under a file, in /proc, or not writable
        from ..errors import InvalidInput

        raise InvalidInput(f"TP_HOME: cannot create {pgdata.parent} for the embedded database: "
                           f"{e.strerror or e}", field="TP_HOME") from None
    fresh = not (pgdata / "PG_VERSION").exists()
    _clear_stale_lock(pgdata)
    try:
        srv = _server(pgdata)
        admin = srv.get_uri()
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            if fresh:
                for k, v in _SERVER_SETTINGS.items():
                    conn.execute(f"ALTER SYSTEM SET {k} = {v}")
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE}")
        if fresh:
            # shared_buffers needs a restart; the others a reload
            stop_embedded(pgdata)
            srv = _server(pgdata)
        return srv.get_uri(DATABASE)
    except (psycopg.OperationalError, subprocess.SubprocessError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, subprocess.SubprocessError):  # pg_ctl failed: the server's log says why
            fatal = [ln for ln in _log_tail(pgdata) if "FATAL" in ln]
            reason = fatal[-1].split("FATAL:", 1)[-1].strip() if fatal else "pg_ctl start failed"
        raise StoreUnavailable(
            f"the embedded PostgreSQL server under {pgdata} could not be started: {reason} "
            f"(its log: {pgdata / 'log'})", field="TP_HOME") from None


def _log_tail(pgdata: Path, n: int = 20) -> list[str]:
    try:
        return (Path(pgdata) / "log").read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((Path(pgdata) / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether pid is a live process (a killed server not yet reaped by its parent is a zombie: not alive)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _clear_stale_lock(pgdata: Path) -> None:
    pid = _postmaster_pid(pgdata)
    if pid is None or _alive(pid):
        return
    log.warning("the embedded PostgreSQL server under %s stopped without shutting down (process %d is gone); "
                "restarting it", pgdata, pid)
    lock = Path(pgdata) / "postmaster.pid"
    lines = lock.read_text().splitlines()
    if len(lines) >= 5 and lines[3].strip() and lines[4].strip():  # the socket's lock names the dead server too
        socket = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}"
        for p in (Path(f"{socket}.lock"), socket):
            p.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
    _forget(pgdata)


def _forget(pgdata: Path) -> None:
    """Drop pgserver's in-process handle on the server (it would otherwise be reused, or stopped at exit)."""
    inst = _pgserver().PostgresServer._instances.pop(Path(pgdata).resolve(), None)
    if inst is not None:
        import atexit

        atexit.unregister(inst._cleanup)


def embedded_running(pgdata: Path) -> bool:
    pid = _postmaster_pid(pgdata)
    return pid is not None and _alive(pid)


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server if it runs; returns whether it was running."""
    if not embedded_running(pgdata):
        return False
    user = "pgserver" if os.geteuid() == 0 else None
    _pgserver()._commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(pgdata), user=user)
    _forget(pgdata)
    return True

"""The embedded PostgreSQL server (pgserver) under ``$TP_HOME/pg``.

Started on first use and left running (it serves every Dagster run process
and the CLI); ``tp down`` stops it. It listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import os
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


def _server(pgdata: Path):
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver.get_server(pgdata, cleanup_mode=None)


def ensure_embedded(pgdata: Path) -> str:
    """Start (or reuse) the embedded server; return a DSN for the platform database."""
    import psycopg

    pgdata = Path(pgdata)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    fresh = not (pgdata / "PG_VERSION").exists()
    srv = _server(pgdata)
    admin = srv.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
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


def embedded_running(pgdata: Path) -> bool:
    pid_file = Path(pgdata) / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
        return True
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        return False


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server if it runs; returns whether it was running."""
    if not embedded_running(pgdata):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(pgdata), user=user)
    inst = pgserver.PostgresServer._instances.pop(Path(pgdata).resolve(), None)
    if inst is not None:
        import atexit

        atexit.unregister(inst._cleanup)
    return True

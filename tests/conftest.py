"""Shared fixtures: a real PostgreSQL server (a throwaway embedded cluster for the
session, a fresh database per test) and real Dagster instances."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the whole session: TP_TEST_DATABASE_URL (admin DSN) or an embedded one."""
    external = os.environ.get("TP_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from trading_platform.store.embedded import ensure_embedded, stop_embedded

    tmp = Path(tempfile.mkdtemp(prefix="tp-test-pg-"))
    dsn = ensure_embedded(tmp / "pg")
    admin = dsn.replace("/trading?", "/postgres?")
    yield admin
    stop_embedded(tmp / "pg")
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def dsn(pg_server):
    """A fresh, empty database on the test server; dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = pg_server.replace("/postgres?", f"/{name}?") if "/postgres?" in pg_server else _with_db(pg_server, name)
    yield url
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _with_db(dsn: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    d = conninfo_to_dict(dsn)
    d["dbname"] = name
    return make_conninfo(**d)


@pytest.fixture
def store(dsn):
    from trading_platform.store.db import connect

    s = connect(dsn)
    yield s
    s.close()


@pytest.fixture
def instance():
    from dagster import DagsterInstance

    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def tp_env(tmp_path, dsn):
    """Environment for running `tp` as a user would: its own TP_HOME and DAGSTER_HOME."""
    env = dict(os.environ)
    env.update({"TP_HOME": str(tmp_path / "home"), "TP_DATABASE_URL": dsn,
                "DAGSTER_HOME": str(tmp_path / "home" / "dagster"), "TP_LOG_LEVEL": "WARNING"})
    return env


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)

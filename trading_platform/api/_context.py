"""What the api functions share: the market store they open, the Dagster instance and the
MLflow client (each imported only when a function needs it)."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager, nullcontext

_DSN: str | None = None  # the market store last opened, to name it if it goes away


_ROLE: "contextvars.ContextVar[str | None]" = contextvars.ContextVar("tp_store_role", default=None)


def open_store(dsn: str | None = None):
    """A ``MarketStore`` on ``dsn`` (default: ``TP_DATABASE_URL``, else the embedded server); inside ``as_role``,
    the session runs as that role (the write tools: ``tp_api_writer``)."""
    global _DSN
    from ..store.db import connect

    if dsn is None:
        from ..store.runtime import database_url

        dsn = database_url()
    _DSN = dsn
    store = connect(dsn)
    role = _ROLE.get()
    if role is not None:
        try:
            store.conn.execute(f"SET ROLE {role}")  # a fixed name (as_role's caller), never user input
        except BaseException:
            store.close()
            raise
    return store


@contextmanager
def as_role(role: str | None):
    """The stores ``open_store`` opens inside run as ``role`` (None: as the login)."""
    token = _ROLE.set(role)
    try:
        yield
    finally:
        _ROLE.reset(token)


def last_dsn() -> str | None:
    return _DSN


@contextmanager
def store_or_open(store=None):
    """``store`` as it is (the caller closes it), or a store opened and closed here."""
    if store is not None:
        with nullcontext(store) as s:
            yield s
        return
    with open_store() as s:
        yield s


def instance(given=None):
    """``given``, or the platform's Dagster instance (``DAGSTER_HOME``, managed under ``TP_HOME``)."""
    if given is not None:
        return given
    from ..instance import get_instance

    return get_instance()


MLFLOW_CONNECT_TIMEOUT_S = 5.0


def mlflow_client():
    """The registry's client for a command or a tool: a tracking server that does not accept a connection is one
    error at once, naming it (MLflow's own retries take about four silent minutes to give up)."""
    from ..resources.mlflow import MLflowResource

    resource = MLflowResource()
    check_mlflow_server(resource.uri())
    return resource.client()


def check_mlflow_server(uri: str, timeout_s: float = MLFLOW_CONNECT_TIMEOUT_S) -> None:
    """Raise a ``PlatformError`` naming ``MLFLOW_TRACKING_URI`` when ``uri`` is an http(s) server whose host and
    port refuse or time out a TCP connection; any other URI (a file, a database, Databricks) is MLflow's to open."""
    import socket
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if parts.scheme in getproxies() and not proxy_bypass(parts.hostname):
        return  # MLflow goes through the proxy (HTTP(S)_PROXY): a direct connection says nothing about it
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        from ..errors import PlatformError, redact_secrets

        raise PlatformError(redact_secrets(
            f"the MLflow server at {uri} does not answer ({getattr(e, 'strerror', None) or e or type(e).__name__}): "
            "start it, or fix MLFLOW_TRACKING_URI"), field="MLFLOW_TRACKING_URI") from None


def lost_store(e: BaseException):
    """A connection to the market store lost in the middle of a call, as one clear ``StoreUnavailable``
    (None when ``e`` is something else)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
        return None
    from ..errors import StoreUnavailable
    from ..store.db import describe_dsn, redact_dsn

    where = describe_dsn(_DSN) if _DSN else "the market store"
    text = str(e).strip()
    reason = redact_dsn(text.splitlines()[0]) if text else type(e).__name__
    return StoreUnavailable(
        f"lost the market store ({where}) in the middle of the command: {reason}. Its writes are "
        f"transactions, so nothing half-written was kept: run the command again once the database is back",
        field="TP_DATABASE_URL",
    )


def mlflow_failure(e: BaseException):
    """An error MLflow raised (an unsupported or unreachable ``MLFLOW_TRACKING_URI``, a registry that refuses the
    call) as one clear ``PlatformError`` naming the tracking URI without its password (None when ``e`` is
    something else, or MLflow was never imported)."""
    import os
    import sys

    exceptions = sys.modules.get("mlflow.exceptions")
    if exceptions is None or not isinstance(e, exceptions.MlflowException):
        return None
    from ..errors import PlatformError, redact_secrets

    uri = os.environ.get("MLFLOW_TRACKING_URI") or "the embedded MLflow store"
    text = str(getattr(e, "message", "") or e).strip()
    reason = text.splitlines()[0] if text else type(e).__name__
    return PlatformError(redact_secrets(f"MLflow ({uri}): {reason}"), field="MLFLOW_TRACKING_URI")


@contextmanager
def stopped_by_signals():
    """A ``threading.Event`` set by SIGINT or SIGTERM while the block runs (a long-running command's clean stop);
    the previous handlers come back after it. Off the main thread the caller stops it."""
    import signal
    import threading

    stop = threading.Event()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
        except ValueError:  # not the main thread: the caller stops it
            pass
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

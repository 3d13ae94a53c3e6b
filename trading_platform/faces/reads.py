"""The faces' connections to the market store: a pool of ``TP_API_POOL`` (4) connections whose every transaction is
read-only and bounded by ``TP_API_STATEMENT_TIMEOUT_MS`` (5000). A connection that fails mid-call is dropped (the
next call opens a new one), and the call answers one line: ``lost the market store (host … database …)``."""

from __future__ import annotations

import logging
import os
import queue
import threading
from contextlib import contextmanager

from ..errors import InvalidInput, StoreUnavailable

log = logging.getLogger(__name__)


def _setting(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer from {lo} to {hi}, got {raw!r}", field=name) from None
    if not lo <= v <= hi:
        raise InvalidInput(f"{name} must be an integer from {lo} to {hi}, got {raw!r}", field=name)
    return v


def statement_timeout_ms() -> int:
    return _setting("TP_API_STATEMENT_TIMEOUT_MS", 5000, 100, 600_000)


def pool_size() -> int:
    return _setting("TP_API_POOL", 4, 1, 64)


class ReadPool:
    def __init__(self, dsn: str | None = None, size: int | None = None, timeout_ms: int | None = None):
        from ..store.runtime import database_url

        self.dsn = dsn or database_url()
        self.size = size or pool_size()
        self.timeout_ms = timeout_ms or statement_timeout_ms()
        self._free: queue.LifoQueue = queue.LifoQueue()
        self._opened = 0
        self._lock = threading.Lock()
        self._checked = False
        self._warned = False
        self.role: str | None = None

    def _where(self) -> str:
        from ..store.db import describe_dsn

        return describe_dsn(self.dsn)

    def _open(self):
        import psycopg

        from ..store.db import MarketStore, connect

        if not self._checked:  # the schema (migrated when embedded; else an error naming `tp db migrate`)
            connect(self.dsn).close()
            self._checked = True
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                                   options=f"-c default_transaction_read_only=on "
                                           f"-c statement_timeout={self.timeout_ms}")
        except psycopg.Error as e:
            raise StoreUnavailable(f"lost the market store ({self._where()}): {_first_line(e)}",
                                   field="TP_DATABASE_URL") from None
        try:  # the read-only role (migration 20): a read that escaped its read-only transaction still writes nothing
            conn.execute("SET ROLE tp_reader")
            self.role = "tp_reader"
        except psycopg.Error as e:
            self.role = None
            if not self._warned:
                self._warned = True
                log.warning("the faces read as %s, not tp_reader (%s): read-only transactions only",
                            conn.info.user, _first_line(e))
        return MarketStore(conn, self.dsn)

    def _take(self):
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._opened < self.size:
                self._opened += 1
                try:
                    return self._open()
                except BaseException:
                    self._opened -= 1
                    raise
        return self._free.get(timeout=30)

    @contextmanager
    def store(self):
        """A pooled read-only ``MarketStore`` for one call."""
        import psycopg

        s = self._take()
        broken = False
        try:
            yield s
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            broken = True
            if isinstance(e, psycopg.errors.QueryCanceled):
                broken = False
                raise InvalidInput(f"the read took longer than TP_API_STATEMENT_TIMEOUT_MS "
                                   f"({self.timeout_ms} ms): narrow it (a shorter range, a smaller limit)",
                                   field="limit") from None
            raise StoreUnavailable(f"lost the market store ({self._where()}): {_first_line(e)}",
                                   field="TP_DATABASE_URL") from None
        finally:
            if broken or s.conn.closed or s.conn.broken:
                try:
                    s.conn.close()
                finally:
                    with self._lock:
                        self._opened -= 1
            else:
                self._free.put(s)

    def close(self) -> None:
        while True:
            try:
                self._free.get_nowait().conn.close()
            except queue.Empty:
                return


def _first_line(e: BaseException) -> str:
    from ..errors import redact_secrets

    text = str(e).strip()
    return redact_secrets(text.splitlines()[0]) if text else type(e).__name__

"""The market store (PostgreSQL): connection, migrations, the bulk write path, and every query of the platform.

One module per domain, each a set of functions that take a connection (``outbox``, ``revisions``, ``features``,
``outputs``, ``champions``, ``history``, ``rag``) beside ``db`` (the connection and the candle paths). The names
below are loaded on first use: a light module (``history``, ``outbox``) is imported without pandas and numpy,
which ``db`` loads.
"""

__all__ = ["MarketStore", "WriteResult", "connect", "redact_dsn"]


def __getattr__(name: str):
    if name in __all__:
        from . import db

        return getattr(db, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

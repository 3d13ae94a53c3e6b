"""The market store (PostgreSQL): connection, migrations, the bulk write path."""

from .db import MarketStore, WriteResult, connect, redact_dsn

__all__ = ["MarketStore", "WriteResult", "connect", "redact_dsn"]

"""Managed symbols: the Python API behind `tp symbols`.

The ``symbols`` table is the truth; every change here also brings the Dagster
dynamic partition ``symbol`` in step (when an instance is given), so a new
symbol shows up in the UI without a restart. The ``symbol_partitions_sensor``
does the same for changes made straight in SQL.
"""

from __future__ import annotations

from .core.symbols import SymbolInfo
from .store.db import MarketStore


def sync_partitions(instance, store: MarketStore) -> dict:
    from .assets.partitions import symbol_partitions

    table = {s.symbol for s in store.list_symbols()}
    existing = set(instance.get_dynamic_partitions(symbol_partitions.name))
    add, remove = sorted(table - existing), sorted(existing - table)
    if add:
        instance.add_dynamic_partitions(symbol_partitions.name, add)
    for s in remove:
        instance.delete_dynamic_partition(symbol_partitions.name, s)
    return {"added": add, "removed": remove}


class Symbols:
    def __init__(self, store: MarketStore, instance=None):
        self.store = store
        self.instance = instance

    def _sync(self) -> None:
        if self.instance is not None:
            sync_partitions(self.instance, self.store)

    def list(self, enabled_only: bool = False) -> list[SymbolInfo]:
        return self.store.list_symbols(enabled_only)

    def add(self, symbol: str, *, exist_ok: bool = False, **fields) -> SymbolInfo:
        info = SymbolInfo.create(symbol, **fields)
        self.store.add_symbol(info, exist_ok=exist_ok)
        self._sync()
        return self.store.get_symbol(symbol)

    def update(self, symbol: str, **changes) -> SymbolInfo:
        info = self.store.update_symbol(symbol, **changes)
        self._sync()
        return info

    def remove(self, symbol: str, purge: bool = False) -> int:
        n = self.store.remove_symbol(symbol, purge=purge)
        self._sync()
        return n

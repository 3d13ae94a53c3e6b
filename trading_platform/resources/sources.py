"""The market-data source as a Dagster resource: one interface, chosen by configuration."""

from __future__ import annotations

from typing import List, Optional

from dagster import ConfigurableResource
from pydantic import Field, field_validator

from ..sources.base import parse_spec


class MarketSource(ConfigurableResource):
    """Where candles come from: a primary source spec and fallbacks tried in order.

    Specs: ``synthetic[:SEED]``, ``files:DIR``, ``postgres[:TABLE]`` (DSN in
    ``source_dsn``), ``ccxt[:EXCHANGE]``, ``yahoo``, ``auto``. Set from
    ``TP_SOURCE`` and ``TP_SOURCE_FALLBACKS`` (comma-separated).
    """

    spec: str = Field(default="synthetic", description="primary source spec")
    fallbacks: List[str] = Field(default_factory=list, description="specs tried in order on failure")
    source_dsn: Optional[str] = Field(default=None, description="DSN of a postgres source table")

    @field_validator("spec")
    @classmethod
    def _check_spec(cls, v: str) -> str:
        parse_spec(v, field="spec")
        return v

    @field_validator("fallbacks")
    @classmethod
    def _check_fallbacks(cls, v: list[str]) -> list[str]:
        for s in v:
            parse_spec(s, field="fallbacks")
        return v

    def build(self):
        from ..sources.base import FallbackSource, build_source

        chain = [build_source(s, dsn=self.source_dsn) for s in [self.spec, *self.fallbacks]]
        return chain[0] if len(chain) == 1 else FallbackSource(chain)

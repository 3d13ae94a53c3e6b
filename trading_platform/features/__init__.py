"""Point-in-time technical features (polars). No Dagster here."""

from .spec import FeatureSpec

__all__ = ["FeatureSpec"]

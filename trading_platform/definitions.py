"""The code location: every asset, check, job, schedule, sensor and resource.

Imports nothing heavy (no torch, mlflow, ccxt, yfinance, ...): every run launch
and UI reload pays for what this module imports.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, in_process_executor

from .instance import quiet_dagster_warnings

# before the definitions below are built: building them emits Dagster's BetaWarnings, in the code server
# and again in every run worker, on the console of `tp up` (TP_VERBOSE=1 keeps them)
quiet_dagster_warnings()

from .assets.alerts import alerts_assets, alerts_job, alerts_schedule  # noqa: E402 (after the filter above)
from .assets.features import feature_assets  # noqa: E402
from .assets.market_data import market_assets  # noqa: E402
from .assets.models import model_assets  # noqa: E402
from .assets.paper import paper_assets, paper_live_job, paper_live_schedule  # noqa: E402
from .assets.rag import rag_assets, rag_sync_job, rag_sync_schedule  # noqa: E402
from .resources import MarketDB, MarketSource, MLflowResource, ModelServer  # noqa: E402
from .sensors.features import features_job, features_stale_sensor, revisions_job  # noqa: E402
from .sensors.live import live_predictions_job, live_predictions_sensor  # noqa: E402
from .sensors.maintenance import maintenance_job, maintenance_schedule  # noqa: E402
from .sensors.market_data import cycle_schedules, market_cycle_job, market_data_job, symbol_partitions_sensor  # noqa: E402
from .sensors.models import model_jobs, model_schedules  # noqa: E402
from .assets.watchdog import watchdog_checks  # noqa: E402
from .sensors.watchdog import watchdog_sensor  # noqa: E402
from .settings import get_settings  # noqa: E402


def _resources() -> dict:
    db = MarketDB(database_url=EnvVar("TP_DATABASE_URL")) if os.environ.get("TP_DATABASE_URL") else MarketDB()
    fallbacks = [s.strip() for s in os.environ.get("TP_SOURCE_FALLBACKS", "").split(",") if s.strip()]
    source_kwargs = {"spec": os.environ.get("TP_SOURCE", "synthetic"), "fallbacks": fallbacks}
    if os.environ.get("TP_SOURCE_DSN"):
        source_kwargs["source_dsn"] = EnvVar("TP_SOURCE_DSN")
    mlflow = (MLflowResource(tracking_uri=EnvVar("MLFLOW_TRACKING_URI")) if os.environ.get("MLFLOW_TRACKING_URI")
              else MLflowResource())
    server = ModelServer(tracking_uri=EnvVar("MLFLOW_TRACKING_URI") if os.environ.get("MLFLOW_TRACKING_URI") else None,
                         device=get_settings().device)  # a bad TP_DEVICE fails here, naming it
    return {"market_db": db, "market_source": MarketSource(**source_kwargs), "mlflow": mlflow,
            "model_server": server}


def _domains() -> list[Definitions]:
    """One Definitions per domain, merged below: built in a function so that the module holds exactly
    one Definitions at module scope (``dagster dev -m`` and ``definitions validate -m`` require it)."""
    return [
        Definitions(assets=market_assets, jobs=[market_data_job, market_cycle_job], schedules=cycle_schedules,
                    sensors=[symbol_partitions_sensor]),
        Definitions(assets=feature_assets, jobs=[features_job, revisions_job], sensors=[features_stale_sensor]),
        Definitions(assets=model_assets, jobs=model_jobs, schedules=model_schedules),
        Definitions(jobs=[live_predictions_job], sensors=[live_predictions_sensor]),
        Definitions(assets=rag_assets, jobs=[rag_sync_job], schedules=[rag_sync_schedule]),
        Definitions(jobs=[maintenance_job], schedules=[maintenance_schedule]),
        Definitions(assets=alerts_assets, jobs=[alerts_job], schedules=[alerts_schedule]),
        Definitions(asset_checks=watchdog_checks, sensors=[watchdog_sensor]),
        Definitions(assets=paper_assets, jobs=[paper_live_job], schedules=[paper_live_schedule]),
    ]


# Every run executes its steps in its own process, one after another (the named jobs say so themselves; this is
# for the rest: asset backfills and materializations launched from the UI): a process per step would pay the
# code location's import once per step, and on a small machine steps in parallel only compete with the live runs.
defs = Definitions.merge(*_domains(), Definitions(resources=_resources(), executor=in_process_executor))

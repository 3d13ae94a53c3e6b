"""Our own small MLflow resource around ``mlflow.MlflowClient`` (not dagster-mlflow)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from dagster import ConfigurableResource
from pydantic import Field


def default_tracking_uri() -> str:
    from ..settings import get_settings

    return get_settings().mlflow_tracking_uri


_READY: set[str] = set()  # the tracking URIs whose store this process has set up


def ensure_schema(tracking: str) -> None:
    """A local database tracking URI's tables, created (migrated to MLflow's head) in this process, so the
    services started next, or the threads that read next, find them there; nothing for a file store or a server."""
    if not tracking.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        return
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking, registry_uri=tracking).search_registered_models(max_results=1)


class MLflowResource(ConfigurableResource):
    """Tracking and registry. ``tracking_uri`` from MLFLOW_TRACKING_URI (default: SQLite
    under $TP_HOME); artifacts of new experiments go under ``$TP_HOME/mlartifacts``
    with the SQLite default."""

    tracking_uri: Optional[str] = Field(default=None, description="MLflow tracking and registry URI")
    artifact_root: Optional[str] = Field(default=None, description="where new experiments keep artifacts")

    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    def _artifact_root(self) -> str:
        if self.artifact_root:
            return self.artifact_root
        from ..settings import get_settings

        return str(get_settings().home / "mlartifacts")

    def client(self):
        """A client of the store; the first in a process on a local database store creates its tables there and
        then, one thread at a time (``instance.STORAGE_SETUP``: alembic is not thread-safe)."""
        import mlflow
        from mlflow import MlflowClient

        uri = self.uri()
        if uri not in _READY:
            from ..instance import STORAGE_SETUP

            with STORAGE_SETUP:
                if uri not in _READY:
                    ensure_schema(uri)
                    _READY.add(uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        return MlflowClient(uri, uri)

    def experiment_id(self, name: str, attempts: int = 4) -> str:
        """The experiment's id, creating it (artifacts under artifact_root); retried with backoff."""
        for attempt in range(1, attempts + 1):
            try:
                client = self.client()
                exp = client.get_experiment_by_name(name)
                if exp is not None:
                    return exp.experiment_id
                location = None
                if self.uri().startswith(("sqlite:", "file:")) or "://" not in self.uri():
                    location = Path(self._artifact_root(), name).resolve().as_uri()
                return client.create_experiment(name, artifact_location=location)
            except Exception as e:  # noqa: BLE001 - connection errors differ by store
                if attempt == attempts:
                    from ..errors import PlatformError

                    raise PlatformError(f"MLflow at {self.uri()} unreachable after {attempts} tries: {e}",
                                        field="MLFLOW_TRACKING_URI") from None
                time.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    @contextmanager
    def run(self, experiment: str, run_name: str, tags: dict) -> Iterator["object"]:
        import mlflow

        exp_id = self.experiment_id(experiment)
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags) as active:
            yield active

"""Configuration from the environment (DESIGN.md, "Configuration").

Read at call time, not import time, so tests and the CLI can set variables
before use. Nothing here imports a heavy library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInput

DEVICES = ("auto", "cpu", "cuda")
# first month of the `month` partition dimension; history before it is not partitioned
HISTORY_START = os.environ.get("TP_HISTORY_START", "2018-01-01")


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    mlflow_tracking_uri: str
    dagster_home: Path
    device: str

    @property
    def pg_data(self) -> Path:
        return self.home / "pg"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"


def get_settings() -> Settings:
    home = Path(os.environ.get("TP_HOME") or "./.tp").expanduser().resolve()
    device = (os.environ.get("TP_DEVICE") or "auto").strip().lower()
    if device not in DEVICES:
        raise InvalidInput(
            f"TP_DEVICE={device!r} is not one of {', '.join(DEVICES)}", field="TP_DEVICE"
        )
    db = os.environ.get("TP_DATABASE_URL") or None
    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster").resolve()
    return Settings(
        home=home,
        database_url=db,
        mlflow_tracking_uri=mlflow_uri,
        dagster_home=dagster_home,
        device=device,
    )

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


def isolate_mlflow_credentials() -> None:
    """Move a user and password out of an http(s) MLFLOW_TRACKING_URI into MLflow's own
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (this process and those it starts).

    MLflow quotes the tracking URI in its errors and logs; without credentials in it, a
    password cannot reach a message, the Dagster event log or a command line. (Database URIs
    keep theirs: SQLAlchemy needs them there, and masks them itself.)
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    uri = os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri.startswith(("http://", "https://")):
        return
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return
    host = parts.netloc.rsplit("@", 1)[1]
    if parts.username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
    if parts.password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    os.environ["MLFLOW_TRACKING_URI"] = urlunsplit(parts._replace(netloc=host))


def get_settings() -> Settings:
    isolate_mlflow_credentials()
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

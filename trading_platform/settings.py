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
# the first month of the `month` partitions when nothing is known of the market's history (no TP_DATABASE_URL, or
# a store with none yet): TP_HISTORY_START, else 2018-01. With a store that has history, they start where it does,
# and TP_HISTORY_START only moves them earlier (assets/partitions.py)
DEFAULT_HISTORY_START = "2018-01-01"


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    mlflow_uri: str | None  # MLFLOW_TRACKING_URI as given (None: not set)
    dagster_home: Path
    device: str
    # embedded (development): what is not configured is started or kept locally (the embedded PostgreSQL,
    # MLflow on SQLite, Dagster's local instance) and the schema is migrated on first use. Not embedded
    # (production): every service is configured, none is ever started or replaced here, and migrations
    # are a deploy step (`tp db migrate`)
    embedded: bool = True
    dagster_home_set: bool = False  # DAGSTER_HOME came from the environment

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.mlflow_uri:
            return self.mlflow_uri
        if not self.embedded:
            raise InvalidInput(
                f"MLFLOW_TRACKING_URI is not set and the platform is not embedded ({self.mode_reason}): set it to "
                "the MLflow tracking server (http://mlflow:5000 in docker/compose.yaml); in production the platform "
                "never falls back to a local SQLite MLflow store", field="MLFLOW_TRACKING_URI")
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mode_reason(self) -> str:
        raw = (os.environ.get("TP_EMBEDDED") or "").strip()
        return f"TP_EMBEDDED={raw}" if raw else "TP_DATABASE_URL is set"

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
    # an empty variable (docker/compose.yaml passes them through, empty when unused) is not a credential
    if parts.username and not os.environ.get("MLFLOW_TRACKING_USERNAME"):
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username)
    if parts.password is not None and not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    os.environ["MLFLOW_TRACKING_URI"] = urlunsplit(parts._replace(netloc=host))


def configured_history_start() -> str | None:
    """``TP_HISTORY_START`` as its month ('YYYY-MM-01'; the day is ignored), or None when unset."""
    from datetime import datetime

    raw = (os.environ.get("TP_HISTORY_START") or "").strip()
    if not raw:
        return None
    from .core.months import month_key
    from .core.timeframes import check_time_range

    for fmt in ("%Y-%m-%d", "%Y-%m"):
        try:
            month = datetime.strptime(raw, fmt)
        except ValueError:
            continue
        return month_key(check_time_range(month, "TP_HISTORY_START", f"TP_HISTORY_START={raw!r}"))
    raise InvalidInput(f"TP_HISTORY_START={raw!r} is not a month (YYYY-MM or YYYY-MM-DD)", field="TP_HISTORY_START")


def get_settings() -> Settings:
    isolate_mlflow_credentials()
    home = Path(os.environ.get("TP_HOME") or "./.tp").expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise InvalidInput(f"TP_HOME={str(home)!r} is a file, not a directory", field="TP_HOME")
    device = (os.environ.get("TP_DEVICE") or "auto").strip().lower()
    if device not in DEVICES:
        raise InvalidInput(
            f"TP_DEVICE={device!r} is not one of {', '.join(DEVICES)}", field="TP_DEVICE"
        )
    db = os.environ.get("TP_DATABASE_URL") or None
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster").resolve()
    return Settings(
        home=home,
        database_url=db,
        mlflow_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
        dagster_home=dagster_home,
        device=device,
        embedded=embedded_mode(db),
        dagster_home_set=bool(os.environ.get("DAGSTER_HOME")),
    )


def embedded_mode(database_url: str | None) -> bool:
    """``TP_EMBEDDED``: ``1`` embedded, ``0`` production; unset (or ``auto``): embedded unless
    ``TP_DATABASE_URL`` names an external market store."""
    raw = (os.environ.get("TP_EMBEDDED") or "auto").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw == "auto":
        return database_url is None
    raise InvalidInput(f"TP_EMBEDDED={raw!r} is not one of 1, 0, auto", field="TP_EMBEDDED")


# ---- numbers from the environment ------------------------------------------------------------------
MAX_DAYS = 36500  # a retention in days at most (a century): more is a typo, and overflows the date arithmetic


def check_number(name: str, raw, *, cast=float, minimum=None, maximum=None, unit: str = "", hint: str = ""):
    """``raw`` (text, or a number) as ``cast``, finite and within ``[minimum, maximum]``; else ``InvalidInput``
    naming ``name``: NaN, infinities and what overflows to them (``1e400``) are refused, not just what is below
    the minimum (a NaN deadline never passes, an infinite retention overflows the date arithmetic)."""
    from .core.numbers import interval, read, within

    value = read(raw, integer=cast is int)  # plain decimal text: not 0_1 (1), nan or 1e400 (inf)
    if value is None or not within(value, minimum, maximum):
        what = "an integer" if cast is int else "a number"
        of = f" of {unit}" if unit else ""
        raise InvalidInput(f"{name}={raw!r} is not {what}{of}{interval(minimum, maximum)}{hint}", field=name)
    return value


def env_number(name: str, default=None, *, cast=float, minimum=None, maximum=None, unit: str = "", hint: str = "",
               environ=None):
    """The environment variable ``name`` through ``check_number`` (unset or blank: ``default``)."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not str(raw).strip():
        return default
    return check_number(name, raw, cast=cast, minimum=minimum, maximum=maximum, unit=unit, hint=hint)


def env_days(name: str, default=None, *, minimum: float = 1, hint: str = "", environ=None):
    """A retention in days from ``name``: a finite number within ``[minimum, MAX_DAYS]`` (unset: ``default``)."""
    return env_number(name, default, minimum=minimum, maximum=MAX_DAYS, unit="days", hint=hint, environ=environ)

"""The Dagster instance of the embedded stack under $DAGSTER_HOME."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .settings import Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"


def ensure_dagster_home(settings: Settings | None = None) -> Path:
    s = settings or get_settings()
    home = s.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        src = REPO_ROOT / "dagster.yaml"
        if src.exists():
            shutil.copyfile(src, target)
        else:
            target.write_text(_DEFAULT_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance(settings: Settings | None = None):
    from dagster import DagsterInstance

    ensure_dagster_home(settings)
    return DagsterInstance.get()

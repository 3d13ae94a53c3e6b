"""The Dagster instance of the embedded stack under $DAGSTER_HOME.

The repository's ``dagster.yaml`` is the embedded instance's configuration: ``tp``
keeps ``$DAGSTER_HOME/dagster.yaml`` a managed copy of it (marked as such, rewritten
whenever the source changes), and runs ``dagster dev`` from ``$DAGSTER_HOME``, so
the configuration in force is the one in the repository and Dagster finds no
other ``dagster.yaml`` to warn about. A ``dagster.yaml`` you put in your own
``DAGSTER_HOME`` (without the mark) is left alone.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path

from .core.files import replace_text
from .settings import Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_YAML = REPO_ROOT / "dagster.yaml"
_MARK = "# managed by tp:"
_DEFAULT_YAML = ("telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
                 "python_logs:\n  python_log_level: INFO\n")
RUN_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
VERBOSE_ENV = "TP_VERBOSE"  # `tp up --verbose` sets it to 1 for the services, 0 otherwise


def verbose() -> bool:
    """Whether this process prints the chatter of its libraries too (``TP_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def quiet_dagster_warnings() -> None:
    """Ignore Dagster's notes on the status of its own APIs (``BetaWarning``, ``PreviewWarning``,
    ``SupersessionWarning``: by category, every other warning is left as it is) in this process, unless
    ``TP_VERBOSE=1``. Called where they are emitted: on loading the code location (the code server, every
    run worker) and by `tp up` before it loads the sample in process. A user of the platform acts on none
    of them; a developer upgrading Dagster sees them with ``tp up --verbose``."""
    if verbose():
        return
    from dagster import BetaWarning, PreviewWarning, SupersessionWarning

    for category in (BetaWarning, PreviewWarning, SupersessionWarning):
        warnings.filterwarnings("ignore", category=category)


def instance_yaml(run_log_level: str = "INFO") -> str:
    """The embedded instance's dagster.yaml: the repository's, with the runs' console log level."""
    body = SOURCE_YAML.read_text() if SOURCE_YAML.exists() else _DEFAULT_YAML
    body = re.sub(r"(?m)^(\s*python_log_level:\s*)\S+", rf"\g<1>{run_log_level}", body)
    return (f"{_MARK} a copy of {SOURCE_YAML}; edit that file, not this one (tp rewrites this copy)\n"
            + body)


def ensure_dagster_home(settings: Settings | None = None, run_log_level: str | None = None) -> Path:
    """$DAGSTER_HOME with its managed dagster.yaml. ``run_log_level`` is what runs print on the
    console (``tp up`` sets it: INFO, or DEBUG with --verbose); other commands keep the current one."""
    s = settings or get_settings()
    home = s.dagster_home
    target = home / "dagster.yaml"
    if not s.embedded:
        return _production_home(s, target)
    home.mkdir(parents=True, exist_ok=True)
    current = target.read_text() if target.exists() else None
    # an unmarked copy identical to the source is one that an older tp wrote: managed too
    managed = current is None or current.startswith(_MARK) or (
        SOURCE_YAML.exists() and current == SOURCE_YAML.read_text())
    if run_log_level is None:
        found = re.search(r"(?m)^\s*python_log_level:\s*(\S+)", current or "") if managed else None
        run_log_level = found.group(1) if found else "INFO"
    want = instance_yaml(run_log_level)
    if managed and current != want:
        replace_text(target, want)  # the other processes of `tp up` and `tp serve`'s threads read it meanwhile
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _production_home(s: Settings, target: Path) -> Path:
    """Not embedded, the Dagster instance is the deployment's (docker/dagster.yaml: Postgres storage): a
    DAGSTER_HOME that is not set, or has no dagster.yaml of its own, would silently give a local SQLite
    instance (dynamic partitions and backfills the daemon never sees), so it is an error naming it."""
    from .errors import InvalidInput

    why = None
    if not s.dagster_home_set:
        why = "DAGSTER_HOME is not set"
    elif not target.exists():
        why = f"DAGSTER_HOME={s.dagster_home} has no dagster.yaml"
    elif target.read_text().startswith(_MARK):
        why = f"{target} is the embedded instance's configuration (a copy tp manages)"
    if why:
        raise InvalidInput(
            f"{why}, and the platform is not embedded ({s.mode_reason}): point DAGSTER_HOME at the deployment's "
            "instance (docker/dagster.yaml, Postgres storage), or set TP_EMBEDDED=1 for a local one",
            field="DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(s.dagster_home)
    return s.dagster_home


# Dagster's SQLite storages and MLflow's SQLite store set up their tables with alembic, whose module-level context
# is not thread-safe: two threads of one process setting up storage at once break each other (in tp serve a write
# tool failed with KeyError: 'config' while the metrics' registry thread migrated a fresh MLflow store). A process
# makes its Dagster instances (here) and its first MLflow store of a URI (resources/mlflow.py) one at a time.
STORAGE_SETUP = threading.RLock()


def get_instance(settings: Settings | None = None):
    from dagster import DagsterInstance

    with STORAGE_SETUP:
        ensure_dagster_home(settings)
        return DagsterInstance.get()


def fail_orphaned_runs(reason: str, settings: Settings | None = None) -> list[str]:
    """Runs of the embedded instance left in flight by processes that are gone: marked failed with ``reason``
    (their retries and the live sensor take their work again). Called by `tp down` once the services are
    stopped, and by `tp up` before it starts them (what a ``kill -9`` or a crash left). A STARTING run is one the
    daemon was launching: with no daemon, nothing will start it. A STARTED or CANCELING run is failed only when
    the run launcher says its process is gone (a run executing in another process, e.g. `tp demo`'s, is left
    alone). Queued runs stay queued. Returns the run ids."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster._core.launcher.base import WorkerStatus

    s = settings or get_settings()
    if not s.embedded:
        return []
    home = ensure_dagster_home(s)
    if not (home / "dagster.yaml").exists():
        return []
    statuses = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    failed = []
    with DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        for run in instance.get_runs(RunsFilter(statuses=statuses)):
            if run.status != DagsterRunStatus.STARTING:
                try:
                    if launcher.check_run_worker_health(run).status != WorkerStatus.FAILED:
                        continue
                except Exception:  # noqa: BLE001 - a launcher that cannot tell: leave the run to run monitoring
                    continue
            instance.report_run_failed(run, f"{reason}: the run's process is gone and the run never reported its "
                                            "end; marked failed")
            failed.append(run.run_id)
    return failed

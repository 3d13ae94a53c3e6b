"""`tp backup DIR` and `tp restore DIR`: the deployment's state, together, and a restore that is checked.

What a backup holds (``DIR/manifest.json`` lists it, with a SHA-256 of every file, and is written last: a
directory without it is not a backup):

- ``market.dump``: the market store (``pg_dump`` custom format, no owners), with each table's row count;
- ``dagster/``: Dagster's storage. Embedded, the SQLite files under ``$DAGSTER_HOME`` (copied with SQLite's
  online backup, consistent while Dagster writes); in production, ``dagster.dump`` (the ``DAGSTER_PG_*``
  database);
- ``mlflow.db`` or ``mlflow.dump``: MLflow's backend store (the tracking URI's SQLite file or database; behind
  an MLflow server, ``TP_BACKUP_MLFLOW_DB`` names its database);
- ``mlartifacts/``: MLflow's artifacts (the model files; ``TP_BACKUP_MLFLOW_ARTIFACTS`` behind a server);
- ``rag/``: the knowledge base's FAISS index versions (``TP_RAG_DIR``).

Never in it: the model signing key (``$TP_HOME/secrets``; keep it apart: a restore serves its models only with
it), the model cache and the embedded server's data directory (dumped instead).

Consistency across the three databases: each dump is a snapshot of its database, and they are taken in the order
that keeps every reference valid: the market store first (it names model versions), then Dagster's storage, then
MLflow's store, then its artifacts (every version the store lists has its files). A version registered between
two steps is in MLflow and not yet referenced: harmless.

``restore`` checks the manifest (a damaged one is refused, naming what is wrong) and every file against it, that
the backup fits this deployment (the same kinds of stores, the roles, a ``pg_restore`` new enough) and that the
deployment is empty (a market store with tables, Dagster runs, MLflow models), all before touching anything; then
it creates the roles the dump grants to, restores in the same order, rewrites MLflow's artifact locations when the
artifact root moved, and compares every market table's row count with the manifest (``rows_diff``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from .core.digest import manifest, sha256_file
from .errors import InvalidInput, PlatformError, redact_secrets

FORMAT = 1
MANIFEST = "manifest.json"
# the market store's roles its grants and default privileges name (migrations 20, 21, 24 and the live writer's)
ROLES = ("tp_owner", "tp_platform", "tp_reader", "tp_api_writer", "live_writer")
_MEMBER_ROLES = ("tp_owner", "tp_reader", "tp_api_writer")  # the restoring login acts as these (as migrations do)
# MLflow's columns that hold artifact locations (those that exist in the store's schema are rewritten)
_MLFLOW_LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("model_versions", "source"),
                     ("model_versions", "storage_location"), ("logged_models", "artifact_location"))


_SQLITE_SIDE = ("-wal", "-shm", "-journal")  # a SQLite database's side files: its backup copy holds their content
# the parts a restore reads, and the store kinds a part may be of
_PARTS = ("market", "dagster", "mlflow", "mlartifacts", "rag")
_KINDS = ("sqlite", "postgres")


class BackupError(PlatformError):
    """A backup or restore step failed (the message names the step)."""


# ---- where things are ---------------------------------------------------------------------------------------------
def _dagster_pg_dsn() -> str | None:
    if not os.environ.get("DAGSTER_PG_HOST"):
        return None
    from psycopg.conninfo import make_conninfo

    return make_conninfo(host=os.environ["DAGSTER_PG_HOST"], port=os.environ.get("DAGSTER_PG_PORT", "5432"),
                         user=os.environ.get("DAGSTER_PG_USERNAME", ""), password=os.environ.get("DAGSTER_PG_PASSWORD", ""),
                         dbname=os.environ.get("DAGSTER_PG_DB", "dagster"))


def _mlflow_store(settings) -> tuple[str, str]:
    """("sqlite", path) or ("postgres", dsn) of MLflow's backend store."""
    uri = os.environ.get("TP_BACKUP_MLFLOW_DB") or settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        return "sqlite", uri[len("sqlite:///"):]  # sqlite:////abs/path -> /abs/path; sqlite:///rel -> rel
    if uri.startswith(("postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://", "postgres://")):
        return "postgres", re.sub(r"^postgresql\+psycopg2?://", "postgresql://", uri)
    raise InvalidInput("MLflow's backend store is not reachable from here (the tracking URI is "
                       f"{redact_secrets(uri)!r}): set TP_BACKUP_MLFLOW_DB to its database (postgresql://...) and "
                       "TP_BACKUP_MLFLOW_ARTIFACTS to its artifact directory", field="TP_BACKUP_MLFLOW_DB")


def _artifact_root(settings) -> Path:
    given = os.environ.get("TP_BACKUP_MLFLOW_ARTIFACTS")
    if given:
        return Path(given).expanduser().resolve()
    if settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        raise InvalidInput("MLflow's artifacts are behind its server: set TP_BACKUP_MLFLOW_ARTIFACTS to the "
                           "directory it serves them from", field="TP_BACKUP_MLFLOW_ARTIFACTS")
    from .resources.mlflow import MLflowResource

    return Path(MLflowResource()._artifact_root()).expanduser().resolve()


def _rag_dir(settings) -> Path:
    return Path(os.environ.get("TP_RAG_DIR") or settings.home / "rag").expanduser().resolve()


# ---- PostgreSQL ---------------------------------------------------------------------------------------------------
def _split(dsn: str) -> tuple[str, dict]:
    """(a conninfo without its password, the environment carrying it): no password on a command line."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    d = conninfo_to_dict(dsn)
    password = d.pop("password", None)
    env = {**os.environ}
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**d), env


def _major(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(found.group(1)) if found else 0


def _pg_tool(name: str, server_major: int) -> str:
    """The newest ``pg_dump``/``pg_restore`` found (pgserver's bundled one, the system's), at least the server's
    major version."""
    found = []
    try:
        import pgserver

        found.append(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)
    except ImportError:  # pragma: no cover - pgserver is a dependency
        pass
    found += [Path(p) for p in glob.glob(f"/usr/lib/postgresql/*/bin/{name}")]
    if shutil.which(name):
        found.append(Path(shutil.which(name)))
    best = max(((_major(str(p)), str(p)) for p in found if p.exists()), default=None)
    if best is None or best[0] < server_major:
        raise BackupError(f"no {name} of PostgreSQL {server_major} or newer here (found: "
                          f"{best[1] + ' ' + str(best[0]) if best else 'none'}); install the server's client tools")
    return best[1]


def _server_major(conn) -> int:
    return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


def _run(args: list[str], env: dict, what: str) -> None:
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise BackupError(f"{what} failed ({r.returncode}): {redact_secrets(r.stderr.strip())[-1500:]}")


def _table_counts(conn) -> dict[str, int]:
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename").fetchall()]
    return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def _dump(dsn: str, out: Path, what: str) -> dict:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        major = _server_major(conn)
        counts = _table_counts(conn)
        timescale = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
                                            (list(ROLES),)).fetchall()]
    conninfo, env = _split(dsn)
    _run([_pg_tool("pg_dump", major), "--format=custom", "--no-owner", f"--file={out}", f"--dbname={conninfo}"],
         env, f"pg_dump of {what}")
    return {"file": out.name, "tables": counts, "timescaledb": timescale, "roles": roles, "server_major": major}


def _ensure_empty_database(conn, what: str) -> None:
    n = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()[0]
    if n:
        raise InvalidInput(f"{what} is not empty ({n} tables): restore into an empty deployment", field="target")


def _check_restore_target(conn, part: dict, what: str) -> tuple[int, bool, str]:
    """Whether the dump ``part`` restores into ``conn``'s database, checked before anything is written: the roles it
    grants to exist or this login may create them, TimescaleDB is there when the dump uses it, a ``pg_restore`` as new
    as the server and the dump. (The server's major version, whether this login may create roles, the pg_restore.)"""
    major = _server_major(conn)
    can_create = conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
                              ).fetchone()[0]
    for role in part.get("roles", []):
        if role not in ROLES:  # a manifest names only the platform's roles
            raise InvalidInput(f"the backup's manifest names a role that is not the platform's: {role!r}",
                               field="DIR")
        if not can_create and conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            raise BackupError(f"the role {role} the backup grants to does not exist and "
                              "this login may not create it: create it (NOLOGIN) first")
    if part.get("timescaledb") and conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is None:
        raise BackupError(f"the backup's {what} uses TimescaleDB and this server does not have it: install it first")
    return major, can_create, _pg_tool("pg_restore", max(major, part.get("server_major", 0)))


def _restore_dump(dsn: str, dump: Path, part: dict, what: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        _, can_create, pg_restore = _check_restore_target(conn, part, what)
        from psycopg import sql

        for role in part.get("roles", []):
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            if role in _MEMBER_ROLES and can_create:
                conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
        # Dagster's and MLflow's databases belong to their services' roles (compose: tp_platform, tp_mlflow):
        # restored as that owner, so the service reads and writes its tables afterwards
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
                             ).fetchone()[0]
        as_owner = what != "the market store" and owner != conn.execute("SELECT current_user").fetchone()[0]
        if part.get("timescaledb"):
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute("SELECT timescaledb_pre_restore()")
    conninfo, env = _split(dsn)
    try:
        _run([pg_restore, "--no-owner", "--exit-on-error",
              *([f"--role={owner}"] if as_owner else []), f"--dbname={conninfo}", str(dump)], env,
             f"pg_restore of {what}")
    finally:
        if part.get("timescaledb"):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT timescaledb_post_restore()")
    if what == "the market store":  # restored without owners: the schema's objects go back to tp_owner
        from .store.migrations import SECURE_SCHEMA

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SECURE_SCHEMA)


# ---- files --------------------------------------------------------------------------------------------------------
def _sqlite_copy(src: Path, dst: Path) -> None:
    """An online, consistent copy of a SQLite database (its writers may go on)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=60)
    d = sqlite3.connect(dst)
    try:
        s.backup(d)
        d.execute("PRAGMA journal_mode=DELETE")  # a self-contained file: reading it later writes nothing beside it
    finally:
        s.close()
        d.close()


def _copy_tree(src: Path, dst: Path, sqlite: bool = False, skip=()) -> None:
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if any(rel.parts[0] == s for s in skip) or not p.is_file() or p.name.endswith(_SQLITE_SIDE):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if sqlite and p.suffix == ".db":
            _sqlite_copy(p, target)
        else:
            shutil.copy2(p, target)


def _tree_digest(root: Path) -> dict:
    h = hashlib.sha256()
    files = size = 0
    for p, line in manifest(root, lambda p: not p.name.endswith(_SQLITE_SIDE)) if root.exists() else ():
        h.update(line)
        files, size = files + 1, size + p.stat().st_size
    return {"files": files, "bytes": size, "sha256": h.hexdigest()}


def _digest(path: Path) -> dict:
    return _tree_digest(path) if path.is_dir() else {"files": 1, "bytes": path.stat().st_size,
                                                     "sha256": sha256_file(path)}


# ---- backup -------------------------------------------------------------------------------------------------------
def backup(dest: Path, *, settings=None, log=None) -> dict:
    """Write a backup of the deployment into ``dest`` (a new or empty directory); returns the manifest."""
    from .settings import get_settings
    from .store.runtime import database_url

    settings = settings or get_settings()
    say = log or (lambda m: None)
    dest = Path(dest).expanduser().resolve()
    t0 = time.perf_counter()
    try:
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InvalidInput(f"{dest} exists and is not an empty directory: back up into a new one", field="DIR")
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, 0o700)  # market data, MLflow's user store: its owner's only
    except OSError as e:  # a parent that is a file, no permission, a read-only file system
        raise InvalidInput(f"DIR {dest} cannot be made a backup directory: {e.strerror or e}", field="DIR") from None
    manifest: dict = {"format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(), "parts": {}}
    try:
        from importlib.metadata import version

        manifest["tp_version"] = version("trading_platform")
    except Exception:  # noqa: BLE001 - not installed as a distribution (a checkout on PYTHONPATH)
        manifest["tp_version"] = None
    parts = manifest["parts"]
    # 1. the market store (it names model versions: first)
    say("backing up the market store")
    parts["market"] = _dump(database_url(settings), dest / "market.dump", "the market store")
    # 2. Dagster's storage
    say("backing up Dagster's storage")
    dagster_dsn = None if settings.embedded else _dagster_pg_dsn()
    if dagster_dsn:
        parts["dagster"] = {"kind": "postgres", **_dump(dagster_dsn, dest / "dagster.dump", "Dagster's storage")}
    else:
        home = settings.dagster_home
        if home.exists():
            _copy_tree(home, dest / "dagster", sqlite=True, skip=("dagster.yaml",))
        parts["dagster"] = {"kind": "sqlite", "file": "dagster"}
    # 3. MLflow's store, then 4. its artifacts
    say("backing up MLflow's store and artifacts")
    kind, where = _mlflow_store(settings)
    if kind == "sqlite":
        if not Path(where).exists():
            raise BackupError(f"MLflow's store {where} does not exist")
        _sqlite_copy(Path(where), dest / "mlflow.db")
        parts["mlflow"] = {"kind": "sqlite", "file": "mlflow.db"}
    else:
        parts["mlflow"] = {"kind": "postgres", **_dump(where, dest / "mlflow.dump", "MLflow's store")}
    root = _artifact_root(settings)
    if root.exists():
        _copy_tree(root, dest / "mlartifacts")
    parts["mlartifacts"] = {"file": "mlartifacts", "root": str(root), "root_uri": root.as_uri()}
    # 5. the knowledge base's index versions
    rag = _rag_dir(settings)
    if rag.exists():
        _copy_tree(rag, dest / "rag")
    parts["rag"] = {"file": "rag"}
    for part in parts.values():
        path = dest / part["file"]
        part.update(_digest(path) if path.exists() else {"files": 0, "bytes": 0, "sha256": None})
    manifest["seconds"] = round(time.perf_counter() - t0, 3)
    manifest["bytes"] = sum(p["bytes"] for p in parts.values())
    tmp = dest / f".{MANIFEST}"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(dest / MANIFEST)
    say(f"backup written to {dest}: {manifest['bytes'] / 1e6:.1f} MB in {manifest['seconds']:.1f} s")
    return manifest


# ---- restore ------------------------------------------------------------------------------------------------------
def _plain_name(file) -> bool:
    return (isinstance(file, str) and file not in ("", ".", "..", MANIFEST) and "/" not in file and "\\" not in file
            and "\0" not in file)


def _manifest_problem(manifest) -> str | None:
    """What is wrong with a manifest's content (None: it holds everything a restore reads, of the right types)."""
    if not isinstance(manifest, dict):
        return f"not a JSON object but {type(manifest).__name__}"
    if "format" not in manifest:
        return "no format"
    parts = manifest.get("parts")
    if not isinstance(parts, dict):
        return "no parts (an object)"
    missing = [n for n in _PARTS if n not in parts]
    if missing:
        return f"no parts.{missing[0]}"
    files: dict[str, str] = {}
    for name, part in parts.items():
        if not isinstance(part, dict):
            return f"parts.{name} is not an object"
        file = part.get("file")
        if not _plain_name(file):
            return f"parts.{name}.file is {file!r}, not the name of a file in the backup's directory"
        if file in files:
            return f"parts.{name}.file names {file}, as parts.{files[file]}.file does"
        files[file] = name
        sha = part.get("sha256")
        if sha is None and (name in ("market", "mlflow") or part.get("kind") == "postgres"):
            return f"parts.{name}.sha256 is missing (every dump has one)"
        if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            return f"parts.{name}.sha256 is {sha!r}, not a SHA-256"
        roles = part.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            return f"parts.{name}.roles is not a list of role names"
        if not isinstance(part.get("server_major", 0), int):
            return f"parts.{name}.server_major is not a number"
    for name in ("dagster", "mlflow"):
        if parts[name].get("kind") not in _KINDS:
            return f"parts.{name}.kind is {parts[name].get('kind')!r}, not one of {', '.join(_KINDS)}"
    tables = parts["market"].get("tables")
    if not isinstance(tables, dict) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                               for n in tables.values()):
        return "parts.market.tables is not an object of row counts"
    for key in ("root", "root_uri"):
        if not isinstance(parts["mlartifacts"].get(key), str):
            return f"parts.mlartifacts.{key} is missing"
    return None


def read_manifest(src: Path) -> dict:
    """The manifest of the backup in ``src``, checked: its content (what a restore reads), every part's file inside
    the directory and against its checksum. A damaged manifest or part is refused (InvalidInput)."""
    src = Path(src).expanduser().resolve()
    path = src / MANIFEST
    if not path.exists():
        raise InvalidInput(f"{src} holds no {MANIFEST}: not a backup (or one that did not finish)", field="DIR")
    try:
        manifest = json.loads(path.read_text())
    except OSError as e:
        raise InvalidInput(f"{path} cannot be read: {e.strerror or e}", field="DIR") from None
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON (truncated), nested too deep
        raise InvalidInput(f"{path} is damaged: not JSON ({e})", field="DIR") from None
    if isinstance(manifest, dict) and "format" in manifest and manifest["format"] != FORMAT:
        raise InvalidInput(f"{src}: backup format {manifest['format']!r}, this platform reads {FORMAT}",
                           field="DIR")
    problem = _manifest_problem(manifest)
    if problem:
        raise InvalidInput(f"{path} is damaged: {problem}", field="DIR")
    for name, part in manifest["parts"].items():
        p = src / part["file"]
        if p.is_symlink() or (p.exists() and p.resolve().parent != src):
            raise InvalidInput(f"{path} is damaged: parts.{name}.file {part['file']} leads out of the backup's "
                               "directory", field="DIR")
        if part.get("sha256") is None:  # a part that was empty when backed up: none is restored
            if p.exists():
                raise InvalidInput(f"{path} is damaged: parts.{name}.sha256 is null (nothing backed up) and "
                                   f"{part['file']} is there", field="DIR")
            continue
        try:
            same = p.exists() and _digest(p)["sha256"] == part["sha256"]
        except OSError as e:
            raise InvalidInput(f"{src}: {part['file']} ({name}) cannot be read: {e.strerror or e}",
                               field="DIR") from None
        if not same:
            raise InvalidInput(f"{src}: {part['file']} ({name}) is missing or does not match the manifest's "
                               "checksum: the backup is damaged", field="DIR")
    return manifest


def restore(src: Path, *, settings=None, log=None) -> dict:
    """Restore the backup in ``src`` into this (empty) deployment; returns what was restored and ``rows_diff``
    (table -> restored rows minus the backup's; empty when every table matches)."""
    import psycopg

    from .settings import get_settings
    from .store.runtime import database_url

    settings = settings or get_settings()
    say = log or (lambda m: None)
    src = Path(src).expanduser().resolve()
    t0 = time.perf_counter()
    manifest = read_manifest(src)
    parts = manifest["parts"]
    market, dagster, ml = parts["market"], parts["dagster"], parts["mlflow"]
    # every check before anything is written: the backup fits this deployment, which is empty
    dsn = database_url(settings)
    dagster_dsn = None if settings.embedded else _dagster_pg_dsn()
    if dagster["kind"] == "postgres" and not dagster_dsn:
        raise InvalidInput("the backup's Dagster storage is PostgreSQL and this deployment's is not (set "
                           "DAGSTER_PG_HOST and the other DAGSTER_PG_* variables)", field="DAGSTER_PG_HOST")
    if dagster["kind"] == "sqlite" and dagster_dsn and (src / dagster["file"]).exists():
        raise InvalidInput("the backup's Dagster storage is SQLite and this deployment's is PostgreSQL",
                           field="DAGSTER_PG_HOST")
    kind, where = _mlflow_store(settings)
    if ml["kind"] != kind:
        raise InvalidInput(f"the backup's MLflow store is {ml['kind']} and this deployment's is {kind}",
                           field="MLFLOW_TRACKING_URI")
    with psycopg.connect(dsn, autocommit=True) as conn:
        _ensure_empty_database(conn, "the market store")
        _check_restore_target(conn, market, "the market store")
    if dagster_dsn:
        with psycopg.connect(dagster_dsn, autocommit=True) as conn:
            _ensure_empty_database(conn, "Dagster's storage")
            if dagster["kind"] == "postgres":
                _check_restore_target(conn, dagster, "Dagster's storage")
    elif (settings.dagster_home / "history" / "runs.db").exists():
        runs_db = settings.dagster_home / "history" / "runs.db"
        try:
            with closing(sqlite3.connect(f"{runs_db.as_uri()}?mode=ro", uri=True)) as c:
                n = c.execute("SELECT count(*) FROM runs").fetchone()[0]
        except sqlite3.Error as e:  # not a database, or not Dagster's run storage: nothing to overwrite blindly
            raise InvalidInput(f"{runs_db} is not Dagster's run storage that a restore can replace ({e}): restore "
                               "into an empty deployment", field="target") from None
        if n:
            raise InvalidInput(f"Dagster's storage in {settings.dagster_home} holds {n} runs: restore into an empty "
                               "deployment", field="target")
    if kind == "sqlite" and Path(where).exists() and Path(where).stat().st_size:
        raise InvalidInput(f"MLflow's store {where} exists: restore into an empty deployment", field="target")
    if kind == "postgres":
        with psycopg.connect(where, autocommit=True) as conn:
            _ensure_empty_database(conn, "MLflow's store")
            _check_restore_target(conn, ml, "MLflow's store")
    root = _artifact_root(settings)
    if root.exists() and any(root.iterdir()):
        raise InvalidInput(f"MLflow's artifact directory {root} is not empty: restore into an empty deployment",
                           field="target")
    rag = _rag_dir(settings)
    if (src / parts["rag"]["file"]).exists() and rag.exists() and (not rag.is_dir() or any(rag.iterdir())):
        # index versions of another knowledge base beside the backup's: a search could load one that does not match
        # the restored documents
        raise InvalidInput(f"the knowledge base's directory {rag} (TP_RAG_DIR) is not empty: restore into an empty "
                           "deployment", field="target")
    # 1. the market store
    say("restoring the market store")
    _restore_dump(dsn, src / market["file"], market, "the market store")
    # 2. Dagster's storage
    say("restoring Dagster's storage")
    if dagster["kind"] == "postgres":
        _restore_dump(dagster_dsn, src / dagster["file"], dagster, "Dagster's storage")
    elif (src / dagster["file"]).exists():
        settings.dagster_home.mkdir(parents=True, exist_ok=True)
        _copy_tree(src / dagster["file"], settings.dagster_home, sqlite=True)
    # 3. MLflow's store and 4. its artifacts, at this deployment's artifact root
    say("restoring MLflow's store and artifacts")
    if kind == "sqlite":
        _sqlite_copy(src / ml["file"], Path(where))
    else:
        _restore_dump(where, src / ml["file"], ml, "MLflow's store")
    if (src / parts["mlartifacts"]["file"]).exists():
        root.mkdir(parents=True, exist_ok=True)
        _copy_tree(src / parts["mlartifacts"]["file"], root)
    moved = _rewrite_locations(kind, where, parts["mlartifacts"], root)
    # 5. the knowledge base's index versions
    if (src / parts["rag"]["file"]).exists():
        _copy_tree(src / parts["rag"]["file"], _rag_dir(settings))
    # what came back
    with psycopg.connect(dsn, autocommit=True) as conn:
        counts = _table_counts(conn)
    want = market["tables"]
    diff = {t: counts.get(t, 0) - n for t, n in want.items() if counts.get(t, 0) != n}
    diff.update({t: n for t, n in counts.items() if t not in want and n})
    out = {"restored_from": str(src), "created_at": manifest.get("created_at"), "tables": len(counts),
           "rows": sum(counts.values()), "rows_diff": diff, "artifact_locations_rewritten": moved,
           "seconds": round(time.perf_counter() - t0, 3)}
    if diff:
        raise BackupError(f"the restored market store differs from the backup: {diff}")
    say(f"restored {len(counts)} tables ({out['rows']} rows) from {src} in {out['seconds']:.1f} s")
    return out


def _rewrite_locations(kind: str, where: str, part: dict, root: Path) -> int:
    """Point MLflow's artifact locations at this deployment's artifact root when it differs from the backup's."""
    old_uri, new_uri = part["root_uri"], root.as_uri()
    old_path, new_path = part["root"], str(root)
    if old_uri == new_uri:
        return 0
    n = 0
    if kind == "sqlite":
        with sqlite3.connect(where) as c:
            have = {(t, col) for t, col in _MLFLOW_LOCATIONS
                    if any(r[1] == col for r in c.execute(f"PRAGMA table_info({t})").fetchall())}
            for t, col in sorted(have):
                for a, b in ((old_uri, new_uri), (old_path, new_path)):  # prefixes: disjoint rows
                    n += c.execute(f"UPDATE {t} SET {col} = ? || substr({col}, ?) WHERE substr({col}, 1, ?) = ?",
                                   (b, len(a) + 1, len(a), a)).rowcount
        c.close()
        return n
    import psycopg

    with psycopg.connect(where, autocommit=True) as conn:
        for t, col in _MLFLOW_LOCATIONS:
            if conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND "
                            "table_name = %s AND column_name = %s", (t, col)).fetchone() is None:
                continue
            for a, b in ((old_uri, new_uri), (old_path, new_path)):  # prefixes: disjoint rows
                n += conn.execute(f"UPDATE {t} SET {col} = %s || substr({col}, %s) WHERE left({col}, %s) = %s",
                                  (b, len(a) + 1, len(a), a)).rowcount
    return n

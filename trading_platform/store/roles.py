"""The market store's roles and their logins (migrations 20, 21, 24 and the live writer's; docs/security.md).

Every role is created NOLOGIN by the migrations (where the migrating login may create roles). ``tp db migrate``
lets one log in once its password is given in the environment, and leaves it as it is otherwise:

| role | password variable | who connects as it |
| --- | --- | --- |
| ``tp_owner`` | ``TP_OWNER_PASSWORD`` | the deploy step, when it should not run as a superuser |
| ``tp_platform`` | ``TP_PLATFORM_PASSWORD`` | the code server, the runs, the live runner, the workers, the api |
| ``tp_reader`` | ``TP_READER_PASSWORD`` | a read-only client (notebooks, BI); the faces SET ROLE to it |
| ``tp_api_writer`` | ``TP_API_WRITER_PASSWORD`` | the faces' write tools SET ROLE to it |
| ``live_writer`` | ``TP_LIVE_WRITER_PASSWORD`` | the exchange collector, outside writers of live candles |
| ``tp_mlflow`` | ``TP_MLFLOW_DB_PASSWORD`` | the MLflow server (compose creates it, owner of the mlflow database) |
"""

from __future__ import annotations

import os

PASSWORDS = {"tp_owner": "TP_OWNER_PASSWORD", "tp_platform": "TP_PLATFORM_PASSWORD", "tp_reader": "TP_READER_PASSWORD",
             "tp_api_writer": "TP_API_WRITER_PASSWORD", "live_writer": "TP_LIVE_WRITER_PASSWORD",
             "tp_mlflow": "TP_MLFLOW_DB_PASSWORD"}


def set_password(conn, role: str) -> str:
    """The role's password variable set: it may log in with it; unset: left as it is. Returns what was done (never
    the password)."""
    import psycopg
    from psycopg import sql

    var = PASSWORDS[role]
    password = os.environ.get(var, "")
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        return (f"{role} does not exist (compose's docker/postgres/10-create-databases.sql creates it)"
                if role == "tp_mlflow" else f"{role} does not exist (the migrating role may not create roles)")
    if not password:
        return f"{role} unchanged ({var} not set)"
    # the SCRAM verifier, computed here: the password itself never reaches the server (its logs, pg_stat_statements)
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
    try:
        conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(role),
                                                                              sql.Literal(verifier)))
    except psycopg.errors.InsufficientPrivilege:
        return (f"{role}'s password not set: the migrating role may not alter roles (CREATEROLE); set it as an "
                f"administrator: ALTER ROLE {role} LOGIN PASSWORD '...'")
    return f"{role} may log in (password from {var})"


def set_passwords(conn) -> dict[str, str]:
    return {role: set_password(conn, role) for role in PASSWORDS}

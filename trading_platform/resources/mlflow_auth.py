"""MLflow behind its basic-auth app: the users of a deployment (compose's ``mlflow_users`` one-shot).

``python -m trading_platform.resources.mlflow_auth`` signs in as MLflow's administrator and makes sure of two
users (docs/security.md, "MLflow behind authentication"):

- the platform's (``TP_MLFLOW_PLATFORM_USER``, default ``tp_platform``; password ``TP_MLFLOW_PLATFORM_PASSWORD``):
  it creates the experiments and registered models it trains into, and MLflow gives their creator MANAGE; on a
  deployment that had them before authentication, it is granted MANAGE on every existing experiment and
  registered model here;
- the faces' read-only user (``TP_MLFLOW_READER_USER``, default ``tp_reader``; ``TP_MLFLOW_READER_PASSWORD``): the
  server's default permission (READ) and nothing else, so it can list, read and download, never register a
  version or move an alias.

Anyone else gets 401. Passwords are set on every run (a changed one in ``docker/.env`` takes effect); none is
printed.
"""

from __future__ import annotations

import os
import sys
import time

from ..errors import InvalidInput, redact_secrets


def _admin_env(user: str, password: str):
    """MLflow's REST clients read their credentials from the environment: the administrator's, while it works."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    return saved


def _restore(saved: dict) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def ensure_users(tracking_uri: str, admin: tuple[str, str], platform: tuple[str, str], reader: tuple[str, str],
                 wait_s: float = 120.0) -> dict:
    """Create or update the two users; MANAGE for the platform's on every existing experiment and registered model.
    Returns what was done (no password)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    for name, (user, password) in (("platform", platform), ("reader", reader)):
        if not user or not password:
            raise InvalidInput(f"the MLflow {name} user needs a name and a password", field=name)
    saved = _admin_env(*admin)
    try:
        auth, client = AuthServiceClient(tracking_uri), MlflowClient(tracking_uri, tracking_uri)
        deadline = time.monotonic() + wait_s
        while True:  # the server may still be starting
            try:
                auth.get_user(admin[0])
                break
            except Exception as e:  # noqa: BLE001 - connection refused, 503, ...
                if isinstance(e, MlflowException) and "401" in str(e):
                    raise InvalidInput("MLflow refused the administrator's credentials (MLFLOW_AUTH_ADMIN_PASSWORD)",
                                       field="MLFLOW_AUTH_ADMIN_PASSWORD") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        done = {}
        for user, password in (platform, reader):
            try:
                auth.get_user(user)
            except MlflowException:
                auth.create_user(user, password)
                done[user] = "created"
            else:
                auth.update_user_password(user, password)
                done[user] = "password updated"
        granted = 0
        targets = [("experiment", e.experiment_id) for e in client.search_experiments(view_type=3)]
        targets += [("registered_model", m.name) for m in client.search_registered_models()]
        for kind, ident in targets:
            try:
                auth.grant_user_permission(platform[0], kind, str(ident), "MANAGE")
                granted += 1
            except MlflowException as e:
                if "exist" not in str(e).lower():  # granted already
                    raise
        done["platform_manage_grants"] = granted
        return done
    finally:
        _restore(saved)


def main() -> int:
    env = os.environ
    uri = env.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        print(f"mlflow_auth: MLFLOW_TRACKING_URI {redact_secrets(uri)!r} is not an MLflow server", file=sys.stderr)
        return 2
    try:
        out = ensure_users(uri, (env.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin"), env.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")),
                           (env.get("TP_MLFLOW_PLATFORM_USER", "tp_platform"), env.get("TP_MLFLOW_PLATFORM_PASSWORD", "")),
                           (env.get("TP_MLFLOW_READER_USER", "tp_reader"), env.get("TP_MLFLOW_READER_PASSWORD", "")))
    except InvalidInput as e:
        print(f"mlflow_auth: {e}", file=sys.stderr)
        return 2
    print(f"mlflow_auth: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

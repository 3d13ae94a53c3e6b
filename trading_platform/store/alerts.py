"""The alert tables as ``tp alerts`` reads and writes them (migration 16): ``alert_rules``, ``alerts``,
``alert_destinations`` and the delivery outbox ``alert_deliveries``; and, to check the names a rule or destination
gives, ``model_champions``, ``output_series`` and ``symbols``.

Every function takes a psycopg connection first and returns plain values (rows as dicts, timestamps as
``datetime``); checking what is asked and shaping the answer is ``trading_platform.api.alerts``. The alerts made,
judged and counted are ``trading_platform.alerts.core``'s; the outbox's claims and sends, ``alerts.delivery``'s.

The indexes the reads use:

- a rule, a destination by name: the ``UNIQUE (name)`` keys of ``alert_rules`` and ``alert_destinations``;
- the alerts a rule made (:func:`count_rule_alerts`): the ``UNIQUE (rule_id, model_name, ...)`` key of ``alerts``
  (``alerts_recent`` leaves the suppressed ones out, and they count);
- the newest alerts (:func:`list_alerts`): ``alerts_created`` walked backwards, ``alerts_model`` when a model is
  given;
- the outbox (:func:`list_deliveries`): its primary key walked backwards; a destination's rows not yet sent
  (:func:`delete_destination`): ``alert_deliveries_open`` (destination_id, status, created_at), its rows to delete
  the ``UNIQUE (destination_id, key)`` key;
- the models known (:func:`known_models`): the primary keys of ``model_champions`` and ``output_series``; the
  symbols (:func:`existing_symbols`): the primary key of ``symbols``.
"""

from __future__ import annotations

RULE_COLUMNS = ("id, name, model_name AS model, symbols, timeframes, threshold, side, cooldown_s, enabled, "
                "removed_at, created_at, updated_at")
DESTINATION_COLUMNS = ("id, name, kind, url_env, secret_env, token_env, chat_id, send_mode, resolutions, "
                       "retractions, models, rate_per_min, watchdog, paper, enabled, created_at, updated_at")
# the columns an update may set (their names are written into the statement; the values are parameters)
RULE_SETTINGS = frozenset({"model_name", "symbols", "timeframes", "threshold", "side", "cooldown_s", "enabled"})
DESTINATION_SETTINGS = frozenset({"kind", "url_env", "secret_env", "token_env", "chat_id", "send_mode", "resolutions",
                                  "retractions", "models", "rate_per_min", "watchdog", "paper", "enabled"})


def _dicts(conn, sql: str, params=()) -> list[dict]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def _settable(values: dict, allowed: frozenset, table: str) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"{table} has no settable column {', '.join(unknown)}")


# ---- names the rules and destinations give ---------------------------------------------------------------

def known_models(conn) -> set[str]:
    """The models with a champion history or outputs."""
    return {r[0] for r in conn.execute("SELECT model_name FROM model_champions UNION "
                                       "SELECT model_name FROM output_series").fetchall()}


def existing_symbols(conn, names: list[str]) -> set[str]:
    """Those of ``names`` that are in the symbols table."""
    return {r[0] for r in conn.execute("SELECT symbol FROM symbols WHERE symbol = ANY(%s)", (names,)).fetchall()}


# ---- rules -----------------------------------------------------------------------------------------------

def get_rule(conn, name: str) -> dict | None:
    """Rule ``name`` (removed or not), or None."""
    rows = _dicts(conn, f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE name = %s", (name,))
    return rows[0] if rows else None


def list_rules(conn, *, removed: bool = False) -> list[dict]:
    """The rules by name; the removed ones too with ``removed``."""
    return _dicts(conn, f"SELECT {RULE_COLUMNS} FROM alert_rules"
                        + ("" if removed else " WHERE removed_at IS NULL") + " ORDER BY name")


def insert_rule(conn, name: str, *, model_name: str, symbols: list[str] | None, timeframes: list[str] | None,
                threshold: float, side: str, cooldown_s: float, enabled: bool) -> int | None:
    """Add rule ``name``; its id, or None when a rule (removed or not) already has the name."""
    row = conn.execute(
        "INSERT INTO alert_rules (name, model_name, symbols, timeframes, threshold, side, cooldown_s, enabled) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
        (name, model_name, symbols, timeframes, threshold, side, cooldown_s, enabled)).fetchone()
    return None if row is None else row[0]


def update_rule(conn, name: str, values: dict) -> None:
    """Set the columns of ``values`` (:data:`RULE_SETTINGS`) of rule ``name`` and its ``updated_at``; none: no-op."""
    if not values:
        return
    _settable(values, RULE_SETTINGS, "alert_rules")
    sets = ", ".join(f"{k} = %s" for k in values)
    conn.execute(f"UPDATE alert_rules SET {sets}, updated_at = now() WHERE name = %s", (*values.values(), name))


def retire_rule(conn, name: str) -> None:
    """Mark rule ``name`` removed and disabled (a removed one stays as it is); its alerts stay."""
    conn.execute("UPDATE alert_rules SET removed_at = now(), enabled = false, updated_at = now() "
                 "WHERE name = %s AND removed_at IS NULL", (name,))


def count_rule_alerts(conn, name: str) -> int:
    """How many alerts rule ``name`` made (suppressed ones included)."""
    return conn.execute("SELECT count(*) FROM alerts a JOIN alert_rules r ON r.id = a.rule_id "
                        "WHERE r.name = %s", (name,)).fetchone()[0]


# ---- destinations ----------------------------------------------------------------------------------------

def get_destination(conn, name: str) -> dict | None:
    """Destination ``name``, or None."""
    rows = _dicts(conn, f"SELECT {DESTINATION_COLUMNS} FROM alert_destinations WHERE name = %s", (name,))
    return rows[0] if rows else None


def list_destinations(conn) -> list[dict]:
    """The destinations by name."""
    return _dicts(conn, f"SELECT {DESTINATION_COLUMNS} FROM alert_destinations ORDER BY name")


def destination_env_names(conn) -> list[tuple]:
    """(id, name, kind, url_env, secret_env, token_env) of every destination: the variables they name."""
    return conn.execute("SELECT id, name, kind, url_env, secret_env, token_env FROM alert_destinations").fetchall()


def insert_destination(conn, name: str, values: dict, *, enabled: bool) -> int | None:
    """Add destination ``name`` with the columns of ``values``; its id, or None when the name is taken."""
    _settable(values, DESTINATION_SETTINGS, "alert_destinations")
    cols = ["name", *values, "enabled"]
    row = conn.execute(
        f"INSERT INTO alert_destinations ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
        "ON CONFLICT (name) DO NOTHING RETURNING id", (name, *values.values(), enabled)).fetchone()
    return None if row is None else row[0]


def update_destination(conn, name: str, values: dict) -> None:
    """Set the columns of ``values`` (:data:`DESTINATION_SETTINGS`) of destination ``name``; none: no-op."""
    if not values:
        return
    _settable(values, DESTINATION_SETTINGS, "alert_destinations")
    sets = ", ".join(f"{k} = %s" for k in values)
    conn.execute(f"UPDATE alert_destinations SET {sets}, updated_at = now() WHERE name = %s",
                 (*values.values(), name))


def delete_destination(conn, destination_id: int) -> tuple[int, int]:
    """Delete a destination and its outbox rows; (rows deleted, of them not yet sent). Run it in a transaction."""
    undelivered = conn.execute("SELECT count(*) FROM alert_deliveries WHERE destination_id = %s AND "
                               "status IN ('pending', 'sending')", (destination_id,)).fetchone()[0]
    n = conn.execute("DELETE FROM alert_deliveries WHERE destination_id = %s", (destination_id,)).rowcount
    conn.execute("DELETE FROM alert_destinations WHERE id = %s", (destination_id,))
    return n, undelivered


# ---- alerts and deliveries -------------------------------------------------------------------------------

def list_alerts(conn, *, model: str | None = None, symbol: str | None = None, status: str | None = None,
                retracted: bool = False, limit: int) -> list[dict]:
    """The newest ``limit`` alerts (by ``created_at``) with their rule's name, filtered by what is given."""
    where, params = [], []
    if model is not None:
        where.append("a.model_name = %s")
        params.append(model)
    if symbol is not None:
        where.append("a.symbol = %s")
        params.append(symbol)
    if status is not None:
        where.append("a.status = %s")
        params.append(status)
    if retracted:
        where.append("a.retracted_at IS NOT NULL")
    return _dicts(conn,
                  "SELECT a.id, r.name AS rule, a.model_name AS model, a.model_version AS version, a.symbol, "
                  "a.timeframe, a.ts, a.candle_close, a.created_at, a.role, a.in_sample, a.value, a.current_value, "
                  "a.threshold, a.side, a.target, a.kind, a.horizon, a.rise, a.entry, a.status, a.send, "
                  "a.retracted_at, a.candles_seen, a.peak, a.trough, a.deciding_ts, a.expires_at, a.resolved_at "
                  "FROM alerts a JOIN alert_rules r ON r.id = a.rule_id"
                  + (" WHERE " + " AND ".join(where) if where else "")
                  + " ORDER BY a.created_at DESC, a.id DESC LIMIT %s", (*params, limit))


def list_deliveries(conn, *, status: str | None = None, destination_id: int | None = None,
                    limit: int) -> list[dict]:
    """The newest ``limit`` outbox rows (by id) with their destination's name, filtered by what is given."""
    where, params = [], []
    if status is not None:
        where.append("d.status = %s")
        params.append(status)
    if destination_id is not None:
        where.append("d.destination_id = %s")
        params.append(destination_id)
    return _dicts(conn,
                  "SELECT d.id, t.name AS destination, d.alert_id, d.key, d.type, d.status, d.attempts, "
                  "d.next_attempt_at, d.created_at, d.delivered_at, d.last_status, d.last_error "
                  "FROM alert_deliveries d JOIN alert_destinations t ON t.id = d.destination_id"
                  + (" WHERE " + " AND ".join(where) if where else "")
                  + " ORDER BY d.id DESC LIMIT %s", (*params, limit))

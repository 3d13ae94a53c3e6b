"""The champion (and challenger) history: ``model_champions``, one row per stretch a version held an alias.

Written whenever an alias moves: by the gate (``moved_by = 'gate'``), by ``tp models promote``
(``'promote'``), and, for moves made outside the platform (a user in the MLflow UI or client), by
:func:`sync_from_registry`, which every registry read of the scoring paths calls (the live sensor's pins, the
output assets): such a move is recorded at the time it was seen (``'registry'``). A model with no history yet
is seeded from its alias (``'seed'``, from the time it was seen: an as-of read never shows a version as
champion before anyone could have seen it so).
"""

from __future__ import annotations

from datetime import datetime

ALIASES = ("champion", "challenger")


def record_move(conn, name: str, alias: str, version: str, moved_by: str, at: datetime | None = None,
                note: str | None = None) -> bool:
    """``alias`` of ``name`` is ``version`` from ``at`` (now) on. No-op when it already is; returns whether
    anything was written."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"champions|{name}|{alias}",))
        row = conn.execute("SELECT version, valid_from FROM model_champions WHERE model_name = %s AND alias = %s "
                           "AND valid_to IS NULL", (name, alias)).fetchone()
        if row is not None and row[0] == str(version):
            return False
        at = at or conn.execute("SELECT clock_timestamp()").fetchone()[0]
        if row is not None:
            at = max(at, row[1])
            conn.execute("UPDATE model_champions SET valid_to = %s WHERE model_name = %s AND alias = %s "
                         "AND valid_to IS NULL", (at, name, alias))
        conn.execute("INSERT INTO model_champions (model_name, alias, version, valid_from, moved_by, note) "
                     "VALUES (%s, %s, %s, %s, %s, %s)", (name, alias, str(version), at, moved_by, note))
    return True


def record_removed(conn, name: str, alias: str, at: datetime | None = None) -> bool:
    """The alias was deleted: its open stretch ends."""
    return conn.execute("UPDATE model_champions SET valid_to = coalesce(%s, clock_timestamp()) WHERE model_name = %s "
                        "AND alias = %s AND valid_to IS NULL", (at, name, alias)).rowcount > 0


def sync_from_registry(conn, client, registered=None, served: dict | None = None) -> list[dict]:
    """Compare every registered model's aliases with the open history rows and record what moved outside the
    platform. ``registered``: the registered models already listed by the caller (one registry read);
    ``served``: name -> {alias: version} actually served, where it differs from the registry's aliases (a
    refused version's predecessor kept serving)."""
    from ..models.registry import iter_registered_models

    models = list(registered) if registered is not None else list(iter_registered_models(client))
    open_rows = {(n, a): v for n, a, v in conn.execute(
        "SELECT model_name, alias, version FROM model_champions WHERE valid_to IS NULL").fetchall()}
    known = {n for (n,) in conn.execute("SELECT DISTINCT model_name FROM model_champions").fetchall()}
    moves = []
    for rm in models:
        given = served[rm.name] if served is not None and rm.name in served else (rm.aliases or {})
        aliases = {a: str(v) for a, v in given.items() if a in ALIASES}
        for alias in ALIASES:
            have, want = open_rows.get((rm.name, alias)), aliases.get(alias)
            if have == want:
                continue
            if want is None:
                record_removed(conn, rm.name, alias)
                moves.append({"model": rm.name, "alias": alias, "from": have, "to": None})
                continue
            if rm.name not in known:  # from when it was seen: what held the alias before is not known
                record_move(conn, rm.name, alias, want, "seed", note="seeded from the registry's alias")
            else:
                record_move(conn, rm.name, alias, want, "registry", note="moved outside the platform; seen then")
            moves.append({"model": rm.name, "alias": alias, "from": have, "to": want})
    return moves


def history(conn, name: str | None = None) -> list[dict]:
    rows = conn.execute("SELECT model_name, alias, version, valid_from, valid_to, moved_by, note FROM model_champions "
                        "WHERE %(n)s::text IS NULL OR model_name = %(n)s ORDER BY model_name, alias, valid_from",
                        {"n": name}).fetchall()
    return [{"model": r[0], "alias": r[1], "version": r[2], "valid_from": r[3].isoformat(),
             "valid_to": r[4].isoformat() if r[4] else None, "moved_by": r[5], "note": r[6]} for r in rows]

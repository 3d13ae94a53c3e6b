"""Model versions the platform refused to serve (``models/signing.py``): one row per version while an alias of
the registry points at it, cleared once no alias does or once it verifies. The watchdog's ``model_refused``
check reads the open rows; ``tp models list`` shows their reasons."""

from __future__ import annotations


def record(conn, refused: list[tuple[str, str, str, str]]) -> None:
    """``refused``: (model, version, alias, reason) seen now."""
    for name, version, alias, reason in refused:
        conn.execute(
            "INSERT INTO model_refusals (model_name, version, alias, reason) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (model_name, version) DO UPDATE SET alias = excluded.alias, reason = excluded.reason, "
            "last_at = now(), cleared_at = NULL, first_at = CASE WHEN model_refusals.cleared_at IS NULL "
            "THEN model_refusals.first_at ELSE now() END", (name, version, alias, reason))


def clear(conn, refused: list[tuple[str, str, str, str]]) -> int:
    """Close every open refusal that is not among ``refused``, the complete list of a resolution that looked at
    every aliased version: its alias moved on, its model was deleted, or it verifies now."""
    keep = [f"{r[0]}\x1f{r[1]}" for r in refused]
    return conn.execute(
        "UPDATE model_refusals SET cleared_at = now() WHERE cleared_at IS NULL "
        "AND NOT (model_name || chr(31) || version = ANY(%s))", (keep,)).rowcount


def open_refusals(conn) -> list[dict]:
    rows = conn.execute("SELECT model_name, version, alias, reason, first_at, last_at FROM model_refusals "
                        "WHERE cleared_at IS NULL ORDER BY model_name, version").fetchall()
    return [{"model": r[0], "version": r[1], "alias": r[2], "reason": r[3], "since": r[4], "last_seen": r[5]}
            for r in rows]

"""The predictions table: one row per (model, version, symbol, timeframe, ts); re-runs upsert.

``role`` is ``champion`` for what downstream consumers read and ``shadow`` for a
challenger scored beside it (never used downstream)."""

from __future__ import annotations

import json


def write_predictions(conn, rows: list[tuple]) -> int:
    """rows: (model_name, model_version, symbol, timeframe, ts, value, label, details dict, role)."""
    if not rows:
        return 0
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _pred_stage (LIKE predictions INCLUDING DEFAULTS) "
                     "ON COMMIT DELETE ROWS")
        with conn.cursor() as cur, cur.copy(
            "COPY _pred_stage (model_name, model_version, symbol, timeframe, ts, value, label, details, role) "
            "FROM STDIN"
        ) as cp:
            for r in rows:
                cp.write_row((*r[:7], json.dumps(r[7]), r[8]))
        conn.execute(
            """
            INSERT INTO predictions (model_name, model_version, symbol, timeframe, ts, value, label, details, role)
            SELECT model_name, model_version, symbol, timeframe, ts, value, label, details, role FROM _pred_stage
            ON CONFLICT (model_name, model_version, symbol, timeframe, ts) DO UPDATE SET
                value = EXCLUDED.value, label = EXCLUDED.label, details = EXCLUDED.details,
                role = EXCLUDED.role, created_at = now()
            """
        )
    return len(rows)

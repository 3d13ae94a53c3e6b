"""The model outputs: ``predictions`` (classifiers, regimes), ``forecasts`` (NHITS) and
``patterns`` (TCN). Each is keyed so that a re-run (or a retried event) replaces its rows,
never duplicates them, and every row records the model version behind it.

``role`` is ``champion`` for what downstream consumers read and ``shadow`` for a
challenger scored beside it (never used downstream)."""

from __future__ import annotations


def upsert(conn, table: str, columns: list[str], key: list[str], rows: list[tuple]) -> int:
    """COPY into a temp stage, then INSERT ... ON CONFLICT (key) DO UPDATE: a re-run replaces rows."""
    from psycopg import sql

    if not rows:
        return 0
    stage = f"_{table}_stage"
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    update = sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                                for c in columns if c not in key)
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                     .format(sql.Identifier(stage), sql.Identifier(table)))
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(stage), cols)
        with conn.cursor() as cur, cur.copy(copy) as cp:
            for r in rows:
                cp.write_row(r)
        conn.execute(sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT ({k}) DO UPDATE SET {u}, "
                             "created_at = now()").format(t=sql.Identifier(table), c=cols, s=sql.Identifier(stage),
                                                          k=sql.SQL(", ").join(map(sql.Identifier, key)), u=update))
    return len(rows)

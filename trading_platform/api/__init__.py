"""Plain functions behind every face of the platform.

One module per domain (``symbols``, ``market``, ``features``, ``models``, ``outputs``,
``live``, ``kb`` for the knowledge base, ``runs`` for backfills and the demo). Each
function takes typed arguments, validates them with the errors the CLI gives
(``InvalidInput`` naming the field), and returns JSON-ready data (dicts, lists,
strings, numbers). `tp` is a thin adapter over them (``trading_platform.cli``), and so
are the MCP server and the HTTP API, so a tool and its command cannot disagree.

Importing this package or any of its modules loads no Dagster, MLflow, torch or HTTP
library: a function imports what it uses when it is called. Functions that read or
write the market store open it themselves (``TP_DATABASE_URL``, else the embedded
server) unless a ``store`` is given.
"""

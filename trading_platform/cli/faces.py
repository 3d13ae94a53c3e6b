"""`tp mcp`: the MCP server over stdio (how a local assistant launches it); `tp serve`: the MCP server over
streamable HTTP at /mcp and the read API at /api/v1, in one uvicorn worker."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidInput


def _home(args) -> None:
    """``--home DIR``: TP_HOME (an MCP client passes the server only HOME, LOGNAME, PATH, SHELL, TERM and USER).
    Without TP_DATABASE_URL the store is the embedded one under DIR, which must exist."""
    if args.home:
        home = Path(args.home).expanduser().resolve()
        if not home.is_dir():
            raise InvalidInput(f"--home {home}: no such directory", field="home")
        os.environ["TP_HOME"] = str(home)
    from ..settings import get_settings

    s = get_settings()
    if not s.database_url and s.embedded and not (s.pg_data / "PG_VERSION").exists():
        raise InvalidInput(f"no market store: TP_DATABASE_URL is not set and there is no embedded store under "
                           f"{s.home} ({s.pg_data}); give --home the TP_HOME of a platform (where `tp up` or `tp demo` "
                           "ran), or set TP_DATABASE_URL in the client's env", field="home")


def cmd_mcp(args) -> int:
    import sys

    _home(args)
    from ..faces.mcp_server import build
    from ..faces.reads import ReadPool

    pool = ReadPool()
    with pool.store():  # the store checked (and migrated when embedded) before serving
        pass
    server = build(allow_writes=args.allow_writes, pool=pool)
    sys.stdout.flush()  # stdout is the protocol's from here: nothing else writes to it
    server.run()
    return 0


def cmd_serve(args) -> int:
    from ..faces.http import serve

    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port must be from 1 to 65535, got {args.port}", field="port")
    serve(args.host, args.port, allow_writes=args.allow_writes)
    return 0


def register(sub, cmd) -> None:
    p = sub.add_parser("mcp", help="the MCP server over stdio, for an AI assistant (read tools; writes with "
                                   "--allow-writes)")
    p.set_defaults(fn=cmd_mcp)
    p.add_argument("--home", help="the platform's TP_HOME (an MCP client passes no environment of its own)")
    p.add_argument("--allow-writes", action="store_true",
                   help="also the write tools (add_symbol, start_backfill, promote_model, add_note), each audited")
    p = sub.add_parser("serve", help="the MCP server over streamable HTTP (/mcp) and the read API (/api/v1/..., "
                                     "/docs, /health, /ready)")
    p.set_defaults(fn=cmd_serve)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (not loopback: TP_API_TOKEN is required)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--allow-writes", action="store_true",
                   help="also the write tools (they need TP_API_WRITE_TOKEN), each audited")

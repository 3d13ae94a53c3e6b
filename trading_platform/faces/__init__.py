"""The faces other programs use: the MCP server (``tp mcp``, stdio; ``tp serve``, streamable HTTP at ``/mcp``) and
the read API (``tp serve``: ``/api/v1/...``), both over one tool layer (``faces/tools.py``) that calls the same
``api/`` functions as the CLI.

Importing ``trading_platform.faces.tools`` loads no MCP, HTTP or Dagster library; ``faces/mcp_server.py`` and
``faces/http.py`` import theirs, and nothing in ``trading_platform.definitions`` imports either.
"""

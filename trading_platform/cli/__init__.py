"""`tp`: the platform's command line.

Every command: ``--json`` prints one JSON value as the last line of stdout (logs
go to stderr); an error exits non-zero with a message naming the field or value
at fault (with ``--json``: ``{"error": ..., "field": ...}``); quarantined rows
are results, not errors (exit 0, counted).

Each command group is a module of this package and each command a thin adapter:
parse, call ``trading_platform.api``, print. ``supervisor`` is `tp up`/`tp down`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import PlatformError
from . import alerts, db, faces, features, live, market, models, paper, rag, runs, supervisor, symbols, watchdog
from ._base import Parser, emit, fail  # noqa: F401 (the conventions every command follows)

log = logging.getLogger("tp")
# libraries whose INFO is chatter on a user's console (faiss says which CPU builds it could not load, as a
# ModuleNotFoundError that is no error; sentence-transformers where it loads its model from)
NOISY_LOGGERS = ("pgserver", "alembic", "mlflow", "urllib3", "faiss", "sentence_transformers")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tp", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    def cmd(name, fn, help):
        sp = sub.add_parser(name, help=help)
        sp.set_defaults(fn=fn)
        sp.add_argument("--json", action="store_true", help="one JSON value on the last line of stdout")
        return sp

    # the order of `tp --help`
    supervisor.register(sub, cmd)
    runs.register(sub, cmd)
    for group in (db, symbols, features, models, live, alerts, watchdog, paper, rag, faces):
        group.register(sub, cmd)
    runs.register_backfill(sub, cmd)
    market.register(sub, cmd)
    return p


def check_argv(argv: list[str]) -> None:
    """Arguments that are not text (bytes the locale cannot decode, such as $'\\xff': Python keeps them as lone
    surrogates) are refused here, naming them, instead of as a UnicodeEncodeError from the store or a hash."""
    from ..errors import InvalidInput

    for i, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "backslashreplace").decode("ascii", "replace")
            raise InvalidInput(f"argument {i + 1} ({shown[:40]!r}) is not UTF-8 text", field="arguments") from None


def main(argv: list[str] | None = None) -> int:
    level = (os.environ.get("TP_LOG_LEVEL") or "INFO").strip().upper()
    if level not in logging.getLevelNamesMapping():  # the names logging takes: WARN and FATAL too
        from ..errors import InvalidInput

        names = ", ".join(n for n in logging.getLevelNamesMapping() if n != "NOTSET")
        return fail(InvalidInput(f"TP_LOG_LEVEL={os.environ['TP_LOG_LEVEL']!r} is not one of {names}",
                                 field="TP_LOG_LEVEL"), "--json" in (sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("psycopg").setLevel(logging.ERROR)  # its cleanup after a lost connection is not news
    from ..settings import isolate_mlflow_credentials

    isolate_mlflow_credentials()  # before anything hands the tracking URI to MLflow or to a service
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        check_argv(argv)
        args = build_parser().parse_args(argv)
        return int(args.fn(args) or 0)
    except PlatformError as e:
        return fail(e, as_json)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - only a lost database and MLflow's errors are turned into errors here
        from ..api._context import lost_store, mlflow_failure

        lost = lost_store(e) or mlflow_failure(e)
        if lost is None:
            raise
        return fail(lost, as_json)


if __name__ == "__main__":  # pragma: no cover - `python -m trading_platform.cli` runs __main__.py
    sys.exit(main())

"""The manual (docs/, mkdocs.yml) builds, and it documents every `tp` command and every `TP_` variable.

The commands come from `tp --help` itself, run in subprocesses (argparse's `{a,b,c}` choices), never from the
CLI's internals; the variables from the string literals of trading_platform/**/*.py.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# a subcommand line of argparse's help: the choices alone at the start of a line ("  {list,add,update}"); an
# option's choices ("  --kind {summary,note}") start with the option and are not taken
_CHOICES = re.compile(r"^\s+\{([a-z0-9_,-]+)\}", re.MULTILINE)
# a TP_ variable: not the tail of a longer name (MLFLOW_HTTP_REQUEST_TIMEOUT holds "TP_REQUEST_TIMEOUT")
_VARIABLE = re.compile(r"(?<![A-Za-z0-9_])TP_[A-Z0-9_]*[A-Z0-9]")


def _env() -> dict[str, str]:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # the checkout's package first, whatever the interpreter has installed (an editable install elsewhere)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _manual() -> str:
    """Every page of the manual, and the README."""
    pages = sorted(DOCS.rglob("*.md"))
    assert pages, f"no page under {DOCS}"
    return "\n".join(p.read_text(encoding="utf-8") for p in [*pages, ROOT / "README.md"])


def _help(*words: str) -> str:
    r = subprocess.run([sys.executable, "-m", "trading_platform.cli", *words, "--help"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"tp {' '.join(words)} --help exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def _subcommands(help_text: str) -> list[str]:
    found = _CHOICES.findall(help_text)
    return found[0].split(",") if found else []


def tp_commands() -> list[str]:
    """Every command and subcommand of `tp`, as `tp symbols add` (a leaf) or `tp symbols` (a group)."""
    out, todo = [], [()]
    while todo:
        words = todo.pop(0)
        for sub in _subcommands(_help(*words)):
            out.append((*words, sub))
            todo.append((*words, sub))
    return ["tp " + " ".join(w) for w in out]


def variables_read() -> dict[str, set[str]]:
    """Every TP_ variable named in a string literal of the package, with the files that name it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "trading_platform").rglob("*.py")):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
        for tok in tokens:
            # f-strings are STRING tokens up to Python 3.11 and FSTRING_MIDDLE parts from 3.12 on
            if tok.type == tokenize.STRING or tokenize.tok_name[tok.type] == "FSTRING_MIDDLE":
                for name in _VARIABLE.findall(tok.string):
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_mkdocs_build_strict(tmp_path):
    """The site builds with --strict (mkdocs.yml turns broken links and anchors, and pages left out of nav, into
    warnings, which --strict makes errors)."""
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"mkdocs build --strict failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_tp_command_is_documented():
    commands = tp_commands()
    # the parse found something: the command groups and at least one subcommand of each that has some
    assert {"tp up", "tp demo", "tp symbols", "tp symbols add", "tp rag search"} <= set(commands), commands
    manual = re.sub(r"\s+", " ", _manual())
    missing = [c for c in commands if c not in manual]
    assert not missing, f"`tp` commands no page of docs/ (nor the README) mentions: {missing}"


def test_every_tp_variable_is_documented():
    read = variables_read()
    assert {"TP_HOME", "TP_DATABASE_URL", "TP_SOURCE"} <= set(read), sorted(read)
    manual = _manual()
    documented = set(_VARIABLE.findall(manual))
    missing = {name: sorted(files) for name, files in read.items() if name not in documented}
    assert not missing, f"TP_ variables the code reads that no page of docs/ (nor the README) names: {missing}"


@pytest.mark.parametrize("help_text, expected", [
    ("positional arguments:\n  {list,add,update,remove}\n", ["list", "add", "update", "remove"]),
    ("usage: tp rag search [--kind {summary,note}]\n  --kind {summary,note}\n", []),
])
def test_subcommand_parse(help_text, expected):
    assert _subcommands(help_text) == expected

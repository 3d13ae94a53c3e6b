"""File digests shared by the signed model versions (``models/signing.py``) and the backups (``backup.py``): a
file's SHA-256, and a directory's manifest (each file's relative path and SHA-256, in path order)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(root: Path, keep: Callable[[Path], bool] = lambda p: True) -> Iterator[tuple[Path, bytes]]:
    """(file, b"relative/path\\tsha256\\n") for every file under ``root`` that ``keep`` accepts, in path order."""
    root = Path(root)
    for p in sorted(p for p in root.rglob("*") if p.is_file() and keep(p)):
        yield p, f"{p.relative_to(root).as_posix()}\t{sha256_file(p)}\n".encode()

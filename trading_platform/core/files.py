"""Files that other processes read while they are rewritten."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def replace_text(path: Path, text: str) -> None:
    """``path`` replaced whole: written beside it under a name of this process and thread, then renamed over it,
    so a reader in another process or thread sees the old text or the new one, never a truncated file (a
    half-written dagster.yaml is an instance configuration without its ``config:`` keys)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

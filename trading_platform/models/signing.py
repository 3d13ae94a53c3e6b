"""Signed model versions: the registry is never a path to running code.

Anyone who can write to the MLflow registry can register a version, give it the platform's tags and move
``@champion`` to it; loading its artifact (a pickle, for the regime model) would run their code. So the
platform signs what it registers and serves only what it signed:

- at registration (``models/tracking.log_and_register``), an HMAC-SHA256 over the version's artifact bytes, with
  a key MLflow never sees, is stored as the version tag ``tp.signature`` (``v1:<key id>:<hex>``) before any
  alias moves;
- the serving resource (``resources/serving.ModelServer``) checks it over the bytes it downloaded before it
  deserializes anything, and refuses a version whose signature is missing or wrong.

A plain hash in a tag would prove nothing: whoever registers the version writes the tag too. The key:
``TP_MODEL_SIGNING_KEY`` (at least 32 characters; required when the platform is not embedded, and the same
for every process that trains or serves), else, embedded, a random key generated on first use in
``$TP_HOME/secrets/model-signing.key`` (mode 0600). ``tp backup`` leaves it out.

What is signed: every file of the version's artifact directory as ``models:/NAME/VERSION`` downloads (its
relative path and SHA-256), in path order, after the registered model's name, so a signed artifact copied under
another model's name does not verify. MLflow's own ``registered_model_meta`` (written by the download) is not
part of it. The key id (the first 8 hex digits of the key's SHA-256) tells "signed with another key" from
"tampered with".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from ..errors import InvalidInput

TAG = "tp.signature"
ENV = "TP_MODEL_SIGNING_KEY"
MIN_KEY_CHARS = 32
KEY_FILE = Path("secrets") / "model-signing.key"
SIDECAR = ".tp_signature"  # the tag as downloaded, beside the cached artifacts (a fresh process needs no registry)
UNSIGNED_FILES = {"registered_model_meta", SIDECAR}
_FORMAT = "v1"


def key_path(settings=None) -> Path:
    from ..settings import get_settings

    return (settings or get_settings()).home / KEY_FILE


def signing_key(settings=None) -> bytes:
    """The key: ``TP_MODEL_SIGNING_KEY``, else (embedded only) the key file under ``$TP_HOME``, created on first
    use readable by its owner only."""
    given = os.environ.get(ENV)
    if given is not None:
        if given.strip().lower().startswith("change-me"):
            raise InvalidInput(f"{ENV} is still docker/.env.example's placeholder: a key everyone knows signs nothing "
                               "(set your own, e.g. `openssl rand -hex 32`)", field=ENV)
        if len(given.strip()) < MIN_KEY_CHARS:
            raise InvalidInput(f"{ENV} must hold at least {MIN_KEY_CHARS} characters (e.g. the output of "
                               f"`openssl rand -hex 32`); it has {len(given.strip())}", field=ENV)
        return given.strip().encode()
    from ..settings import get_settings

    settings = settings or get_settings()
    if not settings.embedded:
        raise InvalidInput(f"{ENV} is not set and the platform is not embedded ({settings.mode_reason}): every "
                           "process that trains or serves models needs the same key (e.g. `openssl rand -hex 32`)",
                           field=ENV)
    path = key_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use that one
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    if path.stat().st_mode & 0o077:
        raise InvalidInput(f"the model signing key {path} is readable by others than its owner: "
                           f"`chmod 600 {path}`", field=ENV)
    key = path.read_text().strip()
    if len(key) < MIN_KEY_CHARS:
        raise InvalidInput(f"the model signing key {path} is shorter than {MIN_KEY_CHARS} characters", field=ENV)
    return key.encode()


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _digest(path: Path, name: str, key: bytes) -> str:
    from ..core.digest import manifest

    mac = hmac.new(key, f"tp-model-{_FORMAT}\n{name}\n".encode(), hashlib.sha256)
    for _, line in manifest(path, lambda p: p.relative_to(path).as_posix() not in UNSIGNED_FILES):
        mac.update(line)
    return mac.hexdigest()


def sign(path: Path, name: str, key: bytes | None = None) -> str:
    """The tag value for the artifacts under ``path`` of registered model ``name``."""
    key = key or signing_key()
    return f"{_FORMAT}:{key_id(key)}:{_digest(Path(path), name, key)}"


def precheck(signature: str | None, key: bytes | None = None) -> str | None:
    """Why a version with this tag must not be served, told from the tag alone (missing, not this platform's
    format, another key): no artifact needs fetching to refuse it."""
    if not signature:
        return f"it is not signed (no {TAG} tag): it was not registered by this platform"
    key = key or signing_key()
    parts = signature.split(":")
    if len(parts) != 3 or parts[0] != _FORMAT or len(parts[2]) != 64:
        return f"its {TAG} tag is not a signature of this platform's format"
    if parts[1] != key_id(key):
        return f"it was signed with another key (id {parts[1][:16]}; this platform's is {key_id(key)})"
    return None


def refusal(path: Path, name: str, signature: str | None, key: bytes | None = None) -> str | None:
    """Why the artifacts under ``path`` must not be loaded as ``name`` (None: the signature is this platform's,
    over exactly these bytes)."""
    key = key or signing_key()
    early = precheck(signature, key)
    if early is not None:
        return early
    parts = signature.split(":")
    if not hmac.compare_digest(parts[2], _digest(Path(path), name, key)):
        return "its signature does not match its artifacts (tampered with, or signed by someone else)"
    return None

"""Deployed endpoints on disk: `<state dir>/endpoints/<name>/` holds `endpoint.json` (the spec, version,
owner, key hashes) and `code-<version>.pkl` (the function's cloudpickle bytes, opaque to the server:
only a container unpickles them). Folders 0700, files 0600, each written aside and renamed into place,
so a crash leaves the old version or the new one, never half of one.

Keys are kept as SHA-256 hashes (a key is 32 random bytes: no slow hash is needed) and compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

from ..names import simple_name
from ..endpoint_errors import EndpointNotFound
from .paths import private_dir

KEY_PREFIX = "chk_"
MAX_KEYS = 16


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def endpoint_name(name) -> str:
    return simple_name(name, "endpoint name")


class EndpointStore:
    """The stored endpoints of one control plane (thread-safe). Their records are read once and kept in
    memory (every request reads one): only this store writes them."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}

    def _folder(self, name: str) -> Path:
        return self.root / endpoint_name(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.is_symlink() and (p / "endpoint.json").is_file())

    def load(self, name: str) -> dict:
        """The endpoint's record (a copy: change it through this store)."""
        cached = self._records.get(name)
        if cached is not None:
            return dict(cached)
        path = self._folder(name) / "endpoint.json"
        try:
            record = json.loads(path.read_bytes())
            self._records[name] = record
            return dict(record)
        except FileNotFoundError:
            raise EndpointNotFound(f"no endpoint {name!r} is deployed; list them with `cellhop endpoint list` "
                                   "or GET cellhop/api/endpoints") from None

    def code(self, name: str, version: int) -> bytes:
        return (self._folder(name) / f"code-{int(version)}.pkl").read_bytes()

    def save(self, name: str, code: bytes, spec: dict, owner: str) -> dict:
        """Store a new version (1 for a new endpoint); the previous version's code goes."""
        with self._lock:
            folder = self._folder(name)
            private_dir(self.root.parent)
            private_dir(self.root)
            try:
                old = self.load(name)
            except EndpointNotFound:
                old = None
            private_dir(folder)
            version = (old["version"] + 1) if old else 1
            now = time.time()
            record = {"name": name, "version": version, "spec": spec, "owner": owner,
                      "created": old["created"] if old else now, "updated": now,
                      "keys": old["keys"] if old else []}
            _write(folder / f"code-{version}.pkl", code)
            self._put(name, record)
            if old:
                (folder / f"code-{old['version']}.pkl").unlink(missing_ok=True)
            return record

    def delete(self, name: str) -> None:
        with self._lock:
            folder = self._folder(name)
            if not (folder / "endpoint.json").is_file():
                raise EndpointNotFound(f"no endpoint {name!r} is deployed")
            self._records.pop(name, None)
            shutil.rmtree(folder)

    def new_key(self, name: str) -> str:
        """A new key for `name` (shown once; only its hash is kept)."""
        with self._lock:
            record = self.load(name)
            key = KEY_PREFIX + secrets.token_urlsafe(32)
            record["keys"] = [*record["keys"], {"hash": key_hash(key), "created": time.time()}][-MAX_KEYS:]
            self._put(name, record)
            return key

    def revoke_keys(self, name: str) -> None:
        with self._lock:
            record = self.load(name)
            record["keys"] = []
            self._put(name, record)

    def _put(self, name: str, record: dict) -> None:
        _write(self._folder(name) / "endpoint.json", json.dumps(record).encode())
        self._records[name] = record


def key_matches(record: dict, key: str) -> bool:
    """Whether `key` is one of the endpoint's keys (every stored hash compared, in constant time each)."""
    presented = key_hash(key)
    found = False
    for stored in record.get("keys", []):
        found |= hmac.compare_digest(presented, stored["hash"])
    return found

"""`cellhop.Secret`: a named set of environment variables for containers, whose values are write-only.

    cellhop.Secret.create("hf", HF_TOKEN="...")        # stored by the control plane (0600)
    s = cellhop.Secret.from_dict({"API_KEY": "..."})   # this session only, never on disk
    s = cellhop.Secret.from_dotenv(".env")             # this session only
    cellhop.Secret("hf")                               # one that exists

    %%remote --secret hf                               # or %gpu ... --secret hf, cellhop.remote(secrets=[s])

A Secret object holds its name and keys, never the values: printing it,
pickling it or saving the notebook shows nothing secret.
"""

from __future__ import annotations

import atexit
import os
import secrets as _random
import socket
import threading
from pathlib import Path

from ..errors import SecretNotFound
from ..secret_values import check_values, parse_dotenv, secret_name


def _client():
    from .control_client import get_control_plane

    return get_control_plane().storage()


_session_names: set[str] = set()
_session_lock = threading.Lock()


def _forget_session_secrets() -> None:
    """At exit: the server forgets this kernel's session secrets (an embedded control plane dies anyway)."""
    for name in list(_session_names):
        try:
            _client().secret_delete(name)
        except Exception:
            pass


def _owner() -> dict:
    """Who this kernel is to the control plane, as its container specs say it (owner_pid, owner_host),
    with the label `%gpu` shows ("kernel 1a2b3c4d"): a session secret is this kernel's alone."""
    from .kernel_identity import server_kernel_id

    try:
        kernel_id = server_kernel_id()
    except Exception:
        kernel_id = None
    pid, host = os.getpid(), socket.gethostname()
    label = f"kernel {kernel_id[:8]}" if kernel_id else f"process {pid} on {host}"
    return {"pid": pid, "host": host, "label": label}


def _create_session(client, name: str, values: dict[str, str]) -> dict:
    """Create a session secret owned by this kernel."""
    return client.secret_create(name, values, replace=True, session=True, owner=_owner())


class Secret:
    """A reference to a secret by name (see the module docstring)."""

    def __init__(self, name: str, keys: list[str] | None = None):
        self.name = secret_name(name)
        self._keys = list(keys) if keys is not None else None

    def __repr__(self) -> str:
        keys = f", keys={self._keys}" if self._keys is not None else ""
        return f"Secret({self.name!r}{keys})"

    def __reduce__(self):
        return (Secret, (self.name, self._keys))

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("cellhop.Secret", self.name))

    @property
    def keys(self) -> list[str]:
        """The variable names it sets (the values are never shown)."""
        if self._keys is None:
            found = next((s for s in _client().secret_list() if s["name"] == self.name), None)
            if found is None:
                raise SecretNotFound(f"no secret {self.name!r}; create it with cellhop.Secret.create or "
                                     f"`cellhop secret create {self.name} KEY=VALUE`")
            self._keys = found["keys"]
        return self._keys

    @classmethod
    def create(cls, name: str, values: dict[str, str] | None = None, *, replace: bool = False,
               **variables: str) -> Secret:
        """Store a secret with the control plane (kept across restarts, readable by its owner alone)."""
        values = check_values({**(values or {}), **variables})
        view = _client().secret_create(name, values, replace=replace)
        return cls(view["name"], view["keys"])

    @classmethod
    def from_dict(cls, values: dict[str, str], name: str | None = None) -> Secret:
        """A secret for this session only: held in the control plane's memory, never written to disk,
        usable by this kernel's containers alone and gone when this kernel exits (even killed)."""
        values = check_values(values)
        name = secret_name(name) if name else f"session-{_random.token_hex(4)}"
        view = _create_session(_client(), name, values)
        with _session_lock:
            if not _session_names:
                atexit.register(_forget_session_secrets)
            _session_names.add(name)
        return cls(view["name"], view["keys"])

    @classmethod
    def from_dotenv(cls, path: str | Path = ".env", name: str | None = None) -> Secret:
        """The KEY=VALUE lines of a .env file, as a session-only secret."""
        return cls.from_dict(parse_dotenv(Path(path).read_text()), name=name)

    def delete(self) -> None:
        _client().secret_delete(self.name)
        with _session_lock:
            _session_names.discard(self.name)

    @staticmethod
    def list() -> list[dict]:
        """Every secret: {"name", "keys", "created", "session"} (never values)."""
        return _client().secret_list()


def secret_names(secrets) -> list[str]:
    """Names from what users write: a name, a Secret, or a list of either."""
    if secrets is None:
        return []
    if isinstance(secrets, (str, Secret)):
        secrets = [secrets]
    return [secret_name(s.name if isinstance(s, Secret) else s) for s in secrets]

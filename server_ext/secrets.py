"""Named secrets: sets of environment variables for containers, whose values are write-only.

Stored ones live under `<state dir>/secrets/<name>.json`: the folder is
owner-only (0700), each file 0600, written aside and renamed into place.
Session ones (`cellhop.Secret.from_dict`) live in this process's memory only
and end with it. Listing shows names and keys; the only way to a value is
`environment(names)`, which the container manager calls at launch to put the
values into the container's environment (and nowhere else).

A session secret belongs to the caller that made it (kernel_tokens.Caller:
the kernel whose own token the request carried, the user, or this process
for an embedded control plane), as the server authenticated it, never as
the request says: only containers started by that same caller may use it,
and only it may replace or (unless it is a user) delete it. The owner's pid
and host, which the client sends as container specs do, serve only to drop
the secret once that process has exited, however it exited (the same
liveness test that stops a dead kernel's containers), so a crashed kernel
leaves nothing usable behind.

The masking of secret values in output lives in cellhop/masking.py.
"""

from __future__ import annotations

import json
import os
import secrets as _random
import threading
import time
from pathlib import Path

from ..errors import SecretError, SecretExists, SecretNotFound, SecretOfAnotherOwner
from ..secret_values import check_values, secret_name
from .kernel_tokens import Caller
from .owners import owner_gone
from .paths import private_dir

_UNCHECKED = object()  # _read without an owner check (a view of names and keys)


def check_owner(owner) -> dict | None:
    """The owner process of a session secret as a client sends it: {"pid": int, "host": str, "label": str}.
    It says which process to watch (the secret goes when it exits), never who may use the secret."""
    if owner is None:
        return None
    if not isinstance(owner, dict) or set(owner) - {"pid", "host", "label"} or \
            not isinstance(owner.get("pid"), int) or isinstance(owner.get("pid"), bool) or \
            not isinstance(owner.get("host"), str) or not isinstance(owner.get("label", ""), str):
        raise SecretError('a session secret\'s owner is {"pid": <int>, "host": <str>, "label": <str>}')
    return {"pid": owner["pid"], "host": owner["host"], "label": owner.get("label") or f"pid {owner['pid']}"}


def _owner_gone(owner: dict) -> bool:
    """Whether the process owning a session secret has exited: the container manager's test for a
    container's notebook kernel (its pid on this host), so the two cannot disagree."""
    if owner.get("pid") is None:
        return False  # no process named: it lasts until deleted or the server stops
    return owner_gone(owner["pid"], owner["host"])


class SecretStore:
    """The secrets of one control plane: stored under `root` (0700, files 0600) and session ones in memory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._session: dict[str, dict] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.root / f"{secret_name(name)}.json"

    def _prune(self) -> None:
        """Forget the session secrets whose owner has exited (a SIGKILLed kernel runs no atexit)."""
        with self._lock:
            owned = [(n, r["owner"]) for n, r in self._session.items() if r.get("owner")]
        gone = [(n, owner) for n, owner in owned if _owner_gone(owner)]
        if gone:
            with self._lock:
                for name, owner in gone:
                    if (self._session.get(name) or {}).get("owner") is owner:  # not made again meanwhile
                        del self._session[name]

    def _read(self, name: str, caller=_UNCHECKED) -> dict:
        self._prune()
        with self._lock:
            record = self._session.get(name)
        if record is not None:
            if caller is not _UNCHECKED:
                self._refuse_if_not_owner(record, Caller.of(caller), "use")
            return record
        try:
            return json.loads(self._path(name).read_text())
        except FileNotFoundError:
            raise SecretNotFound(f"no secret {name!r}; create it with `cellhop secret create {name} KEY=VALUE` "
                                 "or cellhop.Secret.from_dict(...)") from None

    @staticmethod
    def _refuse_if_not_owner(record: dict, caller: Caller, doing: str) -> None:
        """Refuse `caller` (as the server authenticated it) a session secret another caller made."""
        owner = record.get("owner")
        if not owner:
            return  # made without an owner (REST, the sidebar): the server's, for every notebook
        if owner["caller"] != caller.id:
            name = record["name"]
            raise SecretOfAnotherOwner(
                f"secret {name!r} is a session-only secret of another notebook ({owner['label']}); only that "
                f"notebook can {doing} it. Make one in this notebook with cellhop.Secret.from_dict(...), or "
                f"store one every notebook can use with `cellhop secret create {name} KEY=VALUE`")

    @staticmethod
    def _view(record: dict) -> dict:
        view = {"name": record["name"], "keys": sorted(record["values"]), "created": record.get("created"),
                "session": bool(record.get("session"))}
        if record.get("owner"):
            view["owner"] = record["owner"]["label"]
        return view

    def create(self, name: str, values: dict[str, str], replace: bool = False, session: bool = False,
               owner: dict | None = None, caller: Caller | None = None) -> dict:
        """Store (or, `session`, keep in memory) secret `name`. Returns its view (name and keys).

        `caller`: who asks, as the server authenticated it (None: this process). `owner` (session
        ones): {"pid", "host", "label"} of the process making it, as the client says. A session secret
        with an owner, or made by a kernel, belongs to `caller`: only containers `caller` starts may
        use it, and it goes when the owner process exits. One made by a user without an owner is the
        server's, for every notebook."""
        name = secret_name(name)
        values = check_values(values)
        owner = check_owner(owner)
        caller = Caller.of(caller)
        if owner is not None and not session:
            raise SecretError("only a session secret has an owner; a stored one is for every notebook")
        record = {"name": name, "values": values, "created": time.time(), "session": session}
        if session:
            if owner is not None or caller.kind == "kernel":
                owner = owner or {}
                label = caller.label if caller.kind == "kernel" else owner.get("label") or caller.label
                record["owner"] = {**owner, "caller": caller.id, "label": label}
            self._prune()
            with self._lock:
                old = self._session.get(name)
                if old is not None and not replace:
                    raise SecretExists(f"secret {name!r} already exists in this session; pass replace=True")
                if old is not None:  # another notebook's session secret is not replaced
                    self._refuse_if_not_owner(old, caller, "replace")
                self._session[name] = record
            return self._view(record)
        path = self._path(name)
        if path.exists() and not replace:
            raise SecretExists(f"secret {name!r} already exists; replace it with --replace (CLI) or replace=True")
        private_dir(self.root)
        tmp = self.root / f".{name}.{_random.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._view(record)

    def list(self) -> list[dict]:
        """Names and keys of every secret (values never)."""
        views = {}
        if self.root.is_dir():
            for path in self.root.glob("*.json"):
                try:
                    views[path.stem] = self._view(json.loads(path.read_text()))
                except (OSError, ValueError, KeyError):
                    continue
        self._prune()
        with self._lock:
            views.update({n: self._view(r) for n, r in self._session.items()})
        return sorted(views.values(), key=lambda v: v["name"])

    def get(self, name: str) -> dict:
        return self._view(self._read(secret_name(name)))

    def delete(self, name: str, caller: Caller | None = None) -> None:
        """Delete secret `name`. A kernel may not delete another caller's session secret (a user may)."""
        name = secret_name(name)
        caller = Caller.of(caller)
        with self._lock:
            record = self._session.get(name)
            if record is not None:
                if caller.kind == "kernel":
                    self._refuse_if_not_owner(record, caller, "delete")
                del self._session[name]
                return
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            raise SecretNotFound(f"no secret {name!r}") from None

    def environment(self, names, caller: Caller | None = None) -> dict[str, str]:
        """The variables of secrets `names`, merged in order (later ones win). For the runtime only.

        `caller`: who started the container, as the server authenticated it (the spec's `caller`;
        None: this process, an embedded control plane's own kernel). A session secret of another
        caller is refused (SecretOfAnotherOwner)."""
        env: dict[str, str] = {}
        for name in names:
            env.update(self._read(secret_name(name), caller)["values"])
        return env

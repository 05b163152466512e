"""Who is calling the control plane: each kernel a cellhop server starts has a token of its own.

The server keeps one random key (never handed out). A kernel it starts gets
`CELLHOP_CONTROL_TOKEN=ck1.<kernel id>.<HMAC-SHA256(key, kernel id)>`, so the
API tells kernels apart by the token alone, with nothing to store: a token
names the one kernel it was made for, and no kernel can make another's. The
same kernel id (a restarted kernel) gets the same token.

A request's `Caller` is what authorization uses, never a field of the request
(a spec's owner_pid says which process to watch for liveness, not who asked):
- `kernel`: a kernel of this server, by its per-kernel token;
- `user`: whoever jupyter_server itself authenticated (its token, password or
  login cookie: the browser, or a client given `CELLHOP_CONTROL_TOKEN=<the
  server's token>`). A single-user server cannot tell such requests apart (a
  token-authenticated request without a cookie is a new anonymous user each
  time), so they are all one caller, the server's user;
- `local`: this process itself, through the embedded control plane (an
  in-kernel control plane has one caller by construction).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

PREFIX = "ck1"


@dataclass(frozen=True)
class Caller:
    """The authenticated identity behind a request."""

    kind: str  # "kernel", "user" or "local"
    name: str = ""  # the kernel id

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """How messages name it: "kernel 1a2b3c4d", "this server's user", "this process"."""
        if self.kind == "kernel":
            return f"kernel {self.name[:8]}"
        if self.kind == "user":
            return "this server's user"
        return "this process"

    @classmethod
    def of(cls, caller: Caller | None) -> Caller:
        """`caller`, where None (a call inside this process) is LOCAL."""
        return LOCAL if caller is None else caller


LOCAL = Caller("local")
USER = Caller("user")


def _mac(key: str, kernel_id: str) -> str:
    digest = hmac.new(key.encode(), kernel_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def token_for(key: str, kernel_id: str) -> str:
    """The token of kernel `kernel_id` under the server's `key`."""
    return f"{PREFIX}.{kernel_id}.{_mac(key, kernel_id)}"


def kernel_of(key: str, token: str) -> str | None:
    """The kernel id `token` was made for under `key`, or None when it is not such a token."""
    prefix, _, rest = token.partition(".")
    kernel_id, _, mac = rest.rpartition(".")
    if prefix != PREFIX or not kernel_id or not mac or not key:
        return None
    return kernel_id if hmac.compare_digest(mac.encode(), _mac(key, kernel_id).encode()) else None

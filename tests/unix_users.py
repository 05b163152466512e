"""Real Unix users for tests that need more than one (made with useradd, removed after), and a way to run a
process as one of them with this Python.

This Python may live under a folder other users cannot enter (pyenv under /root, mode 0700). A process run
`as_user` gets a mount namespace of its own where that folder is an empty tmpfs with only the Python's own
tree bound back in: the user sees the interpreter and its packages, and nothing else of root's home.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def can_make_users() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "making Unix users needs root"
    for tool in ("useradd", "userdel", "groupadd", "groupdel", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@dataclass
class UnixUser:
    name: str
    uid: int
    gid: int
    home: Path


def make_user(prefix: str = "chu", groups: tuple[str, ...] = ()) -> UnixUser:
    name = f"{prefix}{secrets.token_hex(3)}"
    argv = ["useradd", "--create-home", "--shell", "/bin/sh", "--user-group"]
    if groups:
        argv += ["--groups", ",".join(groups)]
    subprocess.run(argv + [name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    return UnixUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def remove_user(user: UnixUser) -> None:
    subprocess.run(["pkill", "-KILL", "-u", user.name], capture_output=True)
    subprocess.run(["userdel", "--remove", "--force", user.name], capture_output=True)


def make_group(prefix: str = "chg") -> str:
    name = f"{prefix}{secrets.token_hex(3)}"
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    return name


def remove_group(name: str) -> None:
    subprocess.run(["groupdel", name], capture_output=True)


def _hidden_roots() -> list[tuple[Path, Path]]:
    """(a folder others cannot enter, its child holding this Python) pairs on the way to this Python."""
    pairs = []
    for prefix in {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}:
        path = Path(prefix)
        for parent in reversed(path.parents):
            if parent == Path("/"):
                continue
            mode = parent.stat().st_mode
            if not mode & 0o001:  # others may not enter: hide it, bind the way to Python back
                child = path.relative_to(parent).parts[0]
                pairs.append((parent, parent / child))
                break
    return sorted(set(pairs))


def as_user_argv(user: UnixUser, argv: list[str]) -> list[str]:
    """The argv that runs `argv` as `user` (its groups too), able to run this Python."""
    script = []
    for hidden, keep in _hidden_roots():
        stage = f"/tmp/.chstage-{secrets.token_hex(4)}"
        script += [f"mkdir -p {stage}", f"mount --bind {shlex.quote(str(keep))} {stage}",
                   f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(hidden))}",
                   f"mkdir -p {shlex.quote(str(keep))}", f"mount --move {stage} {shlex.quote(str(keep))}",
                   f"rmdir {stage}"]
    script.append("exec setpriv --reuid={0} --regid={1} --init-groups -- \"$@\"".format(user.uid, user.gid))
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", " && ".join(script), "as-user",
            *argv]


def user_env(user: UnixUser, extra: dict | None = None) -> dict:
    env = {"HOME": str(user.home), "USER": user.name, "LOGNAME": user.name, "PATH": os.environ.get("PATH", ""),
           "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env

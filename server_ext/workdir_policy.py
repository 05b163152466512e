"""Which host folder a container spec may name as its working directory (bound read-write into it).

The kernel token reaches `POST containers`, so the working directory is the
one host folder a caller chooses; without a rule it could bind `/` over the
sandbox or the Jupyter runtime folder (the server's token) into a container.
The rule:

- the folder, links resolved, lies in one of the *roots*: `c.Cellhop.workdir_roots`
  when set; else, in a Jupyter server, its contents root (`ServerApp.root_dir`,
  where notebooks live: the extension sets it); else (the control plane
  embedded in a plain IPython kernel, no server) the folder the process
  started in, and everything below it;
- it is never `/` or a system folder (`/usr`, `/etc`, `/proc`, ...), even when
  a root is `/`;
- it is never inside cellhop's or Jupyter's own folders (the runtime root with
  every container's keys and logs, the state directory with volumes and
  secrets, jupyter_runtime_dir() with the server's token, jupyter_data_dir(),
  jupyter_config_dir()), unless the root it lies in was configured inside
  one of them on purpose (c.Cellhop.workdir_roots, as tests do); never one of
  them itself. A folder that *holds* one of them is allowed: the sandbox
  covers those with an empty tmpfs.

Data from anywhere else reaches a container through volumes (spec field `volumes`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import InvalidContainerSpec

SYSTEM_FOLDERS = ("/proc", "/sys", "/dev", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                  "/boot", "/run", "/var/run", "/snap")


def jupyter_folders() -> list[Path]:
    """Jupyter's own folders on this host (tokens, connection files, configuration)."""
    from jupyter_core.paths import jupyter_config_dir, jupyter_data_dir, jupyter_runtime_dir

    return [Path(jupyter_runtime_dir()), Path(jupyter_data_dir()), Path(jupyter_config_dir())]


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(path))


class WorkdirPolicy:
    """`check(workdir)` -> the folder to bind (links resolved), or InvalidContainerSpec saying what is allowed.
    (Whether this host can write or make it is host_checks.check_usable's question.)"""

    def __init__(self, roots: Iterable[Path | str], hidden: Iterable[Path | str]):
        self.roots = [_real(r) for r in roots]
        self.hidden = sorted({_real(h) for h in hidden if h})

    def allowed(self) -> str:
        roots = ", ".join(str(r) for r in self.roots) or "none"
        return (f"folders containers may work in: {roots} (and below), except cellhop's and Jupyter's own "
                "folders; other data goes in a volume (spec field 'volumes')")

    def check(self, workdir: Path | str) -> Path:
        shown = str(workdir)[:300]
        real = _real(workdir)
        refusal = None
        if real == Path("/") or any(real.is_relative_to(s) for s in SYSTEM_FOLDERS):
            refusal = "a system folder"
        elif not any(real.is_relative_to(r) for r in self.roots):
            refusal = "outside the folders containers may work in"
        else:
            root = max((r for r in self.roots if real.is_relative_to(r)), key=lambda r: len(r.parts))
            inside = next((h for h in self.hidden if real.is_relative_to(h)
                           and not (root.is_relative_to(h) and root != h)), None)
            if inside is not None:
                refusal = f"inside {inside}, a folder of cellhop or Jupyter that containers never see"
        if refusal is not None:
            where = f" (links resolved: {real})" if str(real) != str(workdir) else ""
            raise InvalidContainerSpec(f"container spec field 'workdir' is {shown!r}{where}, {refusal}. "
                                       f"Allowed: {self.allowed()}. Configure more with c.Cellhop.workdir_roots.")
        return real

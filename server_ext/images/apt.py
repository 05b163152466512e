"""apt_install without root: Debian packages downloaded from the mirror and unpacked into a layer.

Containers have no root and no package manager of their own, so a package is
fetched with `apt-get download` (the named packages, and those of their
dependencies the host lacks: the container sees the host's file system
read-only) and unpacked with `dpkg-deb -x` into `<layer>/apt`. The container
finds its programs and libraries through PATH and LD_LIBRARY_PATH.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

from ...errors import AptUnavailable, CellhopError
from ..file_tree import remove_path

_DEPENDS_FLAGS = ["--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
                  "--no-replaces", "--no-enhances"]


def _multiarch() -> str:
    machine = platform.machine()
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(machine, f"{machine}-linux-gnu")


def bin_dirs() -> list[str]:
    return ["apt/usr/local/bin", "apt/usr/bin", "apt/bin", "apt/usr/sbin", "apt/sbin"]


def lib_dirs() -> list[str]:
    arch = _multiarch()
    return [f"apt/usr/lib/{arch}", f"apt/lib/{arch}", "apt/usr/lib", "apt/lib"]


def check_available() -> None:
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "dpkg-query"):
        if shutil.which(tool) is None:
            raise AptUnavailable(f"apt_install needs {tool}, which this host lacks (apt_install works on "
                                 "Debian and Ubuntu hosts); install the program another way, e.g. run_commands")


def installed_on_host(names: list[str]) -> set[str]:
    if not names:
        return set()
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *names],
                         capture_output=True, text=True)
    found = set()
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("ii"):
            found.add(parts[0].split(":")[0])
    return found


def plan(packages: list[str], run) -> list[str]:
    """The packages to download: those named, and their dependencies missing on this host.

    `run(argv)` runs a command, logging it, and returns its stdout (raising on failure).
    """
    names = [p.split("=", 1)[0] for p in packages]
    text = run(["apt-cache", "depends", *_DEPENDS_FLAGS, *names])
    deps = []
    for line in text.splitlines():
        name = line.strip()
        if line.startswith(" ") or not name or name.startswith("<"):
            continue
        name = name.split(":")[0]
        if name not in deps:
            deps.append(name)
    host = installed_on_host([d for d in deps if d not in names])
    return list(packages) + [d for d in deps if d not in names and d not in host]


def install(packages: list[str], layer: Path, run) -> list[str]:
    """Download and unpack `packages` into `layer/apt`; returns the .deb files unpacked."""
    check_available()
    wanted = plan(packages, run)
    debs = layer / "debs"
    debs.mkdir(exist_ok=True)
    run(["apt-get", "download", "-q", *wanted], cwd=debs)
    files = sorted(debs.glob("*.deb"))
    if not files:
        raise CellhopError(f"apt-get download fetched nothing for {', '.join(wanted)}")
    target = layer / "apt"
    target.mkdir(exist_ok=True)
    for deb in files:
        run(["dpkg-deb", "-x", str(deb), str(target)])
    remove_path(debs, ignore_errors=True)
    return [f.name for f in files]

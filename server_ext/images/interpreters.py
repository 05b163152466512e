"""Finding a Python interpreter of a given version on this host (never downloading one)."""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys

from ...errors import InterpreterNotFound


def _probe(path: str) -> str | None:
    """The full version ("3.11.7") of the interpreter at `path`, or None if it does not run."""
    try:
        out = subprocess.run([path, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _candidates(version: str) -> list[str]:
    found = [sys.executable] if "%d.%d" % sys.version_info[:2] == version else []
    for name in (f"python{version}",):
        for directory in os.environ.get("PATH", "").split(os.pathsep):
            if directory and "shims" not in directory:
                path = os.path.join(directory, name)
                if os.access(path, os.X_OK):
                    found.append(path)
    found += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found += sorted(glob.glob(os.path.join(pyenv, "versions", f"{version}.*", "bin", f"python{version}")),
                    reverse=True)
    uv_pythons = os.path.expanduser("~/.local/share/uv/python")
    found += sorted(glob.glob(os.path.join(uv_pythons, f"cpython-{version}.*", "bin", f"python{version}")),
                    reverse=True)
    if shutil.which(f"python{version}"):
        found.append(shutil.which(f"python{version}"))
    seen, out = set(), []
    for path in found:
        real = os.path.realpath(path)
        if os.path.exists(real) and real not in seen:
            seen.add(real)
            out.append(path)
    return out


@functools.lru_cache(maxsize=16)
def find_interpreter(version: str) -> tuple[str, str]:
    """(path, full version) of a Python `version` ("3.11") interpreter on this host."""
    looked = []
    for path in _candidates(version):
        full = _probe(path)
        looked.append(path)
        if full and full.rsplit(".", 1)[0] == version:
            return path, full
    raise InterpreterNotFound(
        f"no Python {version} interpreter on this host (looked for python{version} on PATH, in /usr/bin, "
        f"/usr/local/bin, pyenv and uv's Python folders{': ' + ', '.join(looked) if looked else ''}); "
        f"cellhop downloads no interpreters: install one (e.g. 'apt-get install python{version}' or "
        f"'uv python install {version}'), or use Image.current() for the notebook's own Python")

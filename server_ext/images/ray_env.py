"""A built image as a Ray runtime environment (the Ray runtime's images).

On Ray a node installs an image itself: `pip_install` and `requirements` become runtime_env pip
packages (a requirements file read as pip reads it, its index and link options kept apart), `env`
its env_vars, `add_local_dir` the working_dir, `add_local_python_source` py_modules. Steps Ray
cannot reproduce (`apt_install`, `run_commands`, `Image.python`) are a clear error.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import CellhopError

_REQUIREMENT_OPTIONS_WITH_VALUE = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f",
                                   "--trusted-host", "--constraint", "-c")
_REQUIREMENT_FLAGS = ("--pre", "--no-index", "--prefer-binary", "--only-binary", "--no-binary")


def requirements_file(path: Path, _seen: frozenset = frozenset()) -> tuple[list[str], list[str]]:
    """(requirement lines, pip options) of a requirements file as pip reads it: comments and blank lines
    skipped, continuation lines joined, `-r`/`--requirement` files followed (relative to the file),
    index and link options kept apart (they become Ray's pip_install_options, not package names)."""
    import shlex

    path = Path(path).resolve()
    if path in _seen:
        return [], []
    try:
        text = path.read_text()
    except OSError as exc:
        raise CellhopError(f"cannot read requirements file {path}: {exc}") from None
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    packages: list[str] = []
    options: list[str] = []
    for line in logical:
        line = line.strip()
        if line.startswith("#"):
            continue
        if " #" in line or "\t#" in line:  # an inline comment (pip: whitespace, then #)
            line = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not line:
            continue
        if not line.startswith("-"):
            packages.append(" ".join(line.split()))
            continue
        words = shlex.split(line)
        flag, value = words[0], " ".join(words[1:]) or None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif flag[:2] in ("-r", "-c", "-i", "-f", "-e") and len(flag) > 2:
            flag, value = flag[:2], flag[2:]
        if flag in ("-r", "--requirement"):
            more, more_options = requirements_file(path.parent / value, _seen | {path})
            packages += more
            options += more_options
        elif flag in ("-e", "--editable"):
            packages.append(value)
        elif flag in ("-c", "--constraint"):
            options += ["--constraint", str(path.parent / value)]
        elif flag in _REQUIREMENT_OPTIONS_WITH_VALUE:
            options += [flag, value]
        elif flag in _REQUIREMENT_FLAGS:
            options += [flag] + ([value] if value else [])
        else:
            raise CellhopError(f"requirements file {path}: option {flag!r} cannot become a Ray runtime_env "
                               "(index, link, constraint and -r options can)")
    return packages, options


def ray_runtime_env(images_root: Path | None, image: str | None) -> tuple[dict, str | None]:
    """Built image `image` of the store at `images_root` as a Ray runtime_env (pip, env_vars, working_dir,
    py_modules), and where its add_local_dir goes inside (Ray ships that folder as the working_dir)."""
    if not image:
        return {}, None
    from .store import ImageStore

    if images_root is None:
        raise CellhopError("this control plane has no image store (c.Cellhop.state_dir)")
    rec = ImageStore(images_root).image(image)
    spec = rec.get("spec") or {}
    base = spec.get("base", {})
    label = rec.get("name") or rec["key"][:12]
    if base.get("kind") != "current":
        raise CellhopError(f"image {label}: on the Ray runtime an image starts from the cluster's own "
                           "Python (cellhop.Image.current()); Image.python(...) needs the local runtime")
    env: dict = {}
    pip: list[str] = []
    pip_options: list[str] = []
    env_vars: dict[str, str] = {}
    workdir_dest = None
    for step in spec.get("steps", []):
        op = step.get("op")
        if op == "pip_install":
            pip += step["packages"]
            for opt, flag in (("index_url", "--index-url"), ("extra_index_url", "--extra-index-url"),
                              ("find_links", "--find-links")):
                if step.get(opt):
                    pip_options += [flag, step[opt]]
            if step.get("pre"):
                pip_options.append("--pre")
        elif op == "requirements":
            packages, options = requirements_file(Path(step["path"]))
            pip += packages
            pip_options += options
        elif op == "env":
            env_vars.update(step["vars"])
        elif op == "add_local_dir":
            if workdir_dest is not None:
                raise CellhopError(f"image {label}: the Ray runtime ships one add_local_dir (as Ray's "
                                   "working_dir); merge the folders into one")
            env["working_dir"] = step["src"]
            workdir_dest = step["dest"]
        elif op == "add_local_python_source":
            env.setdefault("py_modules", []).extend(s["path"] for s in step["sources"])
        elif op == "preload":
            continue  # for standby containers, which the Ray runtime does not keep
        else:
            raise CellhopError(f"image {label}: step {op!r} cannot become a Ray runtime_env (only "
                               "pip_install, requirements, env, add_local_dir and add_local_python_source "
                               "can); use the local runtime for it")
    if pip:
        env["pip"] = {"packages": pip, "pip_check": False}
        if pip_options:
            env["pip"]["pip_install_options"] = pip_options
    if env_vars:
        env["env_vars"] = env_vars
    return env, workdir_dest

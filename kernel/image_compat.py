"""Before values travel into a non-default image: will they unpickle there?

Compared: the Python minor version (bytecode of functions and classes sent by
value changes between minors; objects of classes defined in the notebook, or
in a module the image cannot import, carry their class by value too),
cloudpickle's version, and the version of each package the shipped objects
come from. A mismatch that would break
unpickling is an `ImageMismatch` naming the package and both versions; a
harmless one is a warning.
"""

from __future__ import annotations

import functools
import re
import sys
import types
import warnings

from ..errors import CellhopError


class ImageMismatch(CellhopError):
    """A value cannot travel into the image: a package or Python version there would not unpickle it."""


class ImageVersionWarning(UserWarning):
    """A version differs between the notebook and the image, in a way that should not break unpickling."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def _module_dists() -> dict[str, list[str]]:
    import importlib.metadata as md

    return md.packages_distributions()


def _local_version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _break_level(version: str) -> tuple:
    """The part of a version that may break pickles when it changes: the major (0.x: the minor too)."""
    nums = [int(n) for n in re.findall(r"\d+", version)[:2]] or [0]
    return tuple(nums[:2]) if nums[0] == 0 else (nums[0],)


def _modules_of(value, depth: int = 0, out: set | None = None, code: list | None = None) -> set[str]:
    """Top-level modules whose code the pickle of `value` refers to (a shallow look into containers and
    instances' attributes). `code` collects (module, what) of the functions, classes and instances of
    classes that may travel as bytecode: those whose module may be missing in the image."""
    out = set() if out is None else out
    if isinstance(value, types.ModuleType):
        out.add(value.__name__.split(".")[0])
        return out
    if isinstance(value, (types.FunctionType, type, types.MethodType)):
        module = getattr(value, "__module__", None) or "__main__"
        out.add(module.split(".")[0])
        if code is not None:
            code.append((module, getattr(value, "__qualname__", repr(value))))
    else:
        cls = type(value)
        module = getattr(cls, "__module__", None) or "__main__"
        out.add(module.split(".")[0])
        if code is not None:  # an object of a notebook class carries the class, by value
            code.append((module, f"an instance of {getattr(cls, '__qualname__', cls.__name__)}"))
    if depth < 2:
        items = ()
        if isinstance(value, dict):
            items = list(value.keys())[:50] + list(value.values())[:50]
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)[:50]
        elif not isinstance(value, (type, types.FunctionType, types.MethodType)):
            attributes = getattr(value, "__dict__", None)
            if isinstance(attributes, dict):
                items = list(attributes.values())[:50]
        for item in items:
            _modules_of(item, depth + 1, out, code)
    return out


def _travels_by_value(module: str, local_modules: set[str], dists: dict) -> bool:
    """Whether code of `module` goes into the pickle as bytecode (defined in the notebook, or in a module
    cloudpickle cannot expect in the image: not in sys.modules, nor stdlib, nor a package, nor added)."""
    if module == "__main__" or module not in sys.modules:
        return True
    top = module.split(".")[0]
    if top == "builtins" or top in sys.stdlib_module_names or top in local_modules or top in dists:
        return False
    return True  # a module of the notebook's folder, say: the image cannot import it


def check_image_compat(values: dict, info: dict, image_label: str) -> list[str]:
    """Raise ImageMismatch if `values` would not unpickle in the image `info` describes
    (what `build_image` returned); return (and warn) what differs harmlessly."""
    problems, notes = [], []
    found: list[tuple[str, str]] = []
    modules: set[str] = set()
    for value in values.values():
        _modules_of(value, out=modules, code=found)
    local_modules = set(info.get("modules") or [])
    dists = _module_dists()
    code = [what for module, what in found if _travels_by_value(module, local_modules, dists)]
    image_python = info.get("python_version") or ""
    here = "%d.%d" % sys.version_info[:2]
    there = ".".join(image_python.split(".")[:2])
    if there and there != here:
        if code:
            problems.append(f"Python is {here} in the notebook but {there} in the image, and functions, classes "
                            f"or objects of classes defined in the notebook ({', '.join(sorted(set(code))[:5])}) "
                            "travel as bytecode, "
                            f"which another Python minor version cannot load; use Image.python({here!r}) "
                            "or Image.current()")
        else:
            notes.append(f"Python {here} in the notebook, {there} in the image")
    packages = {_norm(k): v for k, v in (info.get("packages") or {}).items()}
    wanted = {"cloudpickle"}
    for module in modules:
        if module in ("__main__", "builtins") or module in sys.stdlib_module_names or module in local_modules:
            continue
        wanted.update(dists.get(module, []))
    for dist in sorted(wanted):
        mine = _local_version(dist)
        if mine is None:
            continue
        theirs = packages.get(_norm(dist))
        if theirs is None:
            problems.append(f"{dist} {mine} (in the notebook) is not installed in the image; add "
                            f".pip_install('{dist}=={mine}') to it")
        elif theirs != mine:
            if _break_level(theirs) != _break_level(mine):
                problems.append(f"{dist} is {mine} in the notebook but {theirs} in the image, a major version "
                                f"apart: its objects may not unpickle there; pin .pip_install('{dist}=={mine}') "
                                "in the image, or create the value inside the remote cell")
            else:
                notes.append(f"{dist} {mine} in the notebook, {theirs} in the image")
    if problems:
        raise ImageMismatch(f"cannot send values into image {image_label} (nothing ran): " + "; ".join(problems))
    if notes:
        warnings.warn(f"cellhop: versions differ between the notebook and image {image_label}: "
                      + "; ".join(notes), ImageVersionWarning, stacklevel=3)
    return notes

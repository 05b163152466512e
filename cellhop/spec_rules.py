"""What the fields of a container spec may hold, checked once, wherever a spec is made (the API, the
magics, the kernel provisioner): sizes, CPU counts, timeouts, paths and the environment.

Each refusal is a CellhopError (a 400 over the API) that names the field, what was wrong and what
to give instead. The rules:

- `memory`: a size ('8G', '512M', or a number of bytes) of at least 64 MiB and at most 1 PiB.
- `cpus`: a whole number from 1 to MAX_CPUS.
- `idle_timeout`, `queue_timeout`: a finite number of seconds from 0 to MAX_SECONDS.
- `workdir`, `python`: text with no NUL; `workdir` an absolute path (which folders it may name is
  the control plane's decision: workdir_policy.py).
- `env`: names of environment variables ([A-Za-z_][A-Za-z0-9_]*, so no '=', NUL or empty name),
  values with no NUL, at most MAX_ENV_BYTES in all; and no variable that takes over the
  interpreter or the dynamic loader before the sandbox holds (DENIED_ENV: LD_* and the glibc
  variables it honours, PYTHONHOME, PYTHONPATH, PYTHONSTARTUP and every other PYTHON* variable but
  a few harmless switches), nor one the runtime sets itself (the GPUs a container sees).
"""

from __future__ import annotations

import math
import re

from .errors import CellhopError
from .sizes import size_in_bytes

MIN_MEMORY = 64 * 2**20
MAX_MEMORY = 2**50  # 1 PiB
MAX_CPUS = 4096
MAX_SECONDS = 366 * 24 * 3600.0  # a year: longer is a typo (and overflows some waits)
MAX_ENV_BYTES = 128 * 1024  # the kernel's own limit on one variable is 128 KiB; this is all of them
MAX_PID = 2**22  # Linux's pid_max ceiling
MAX_TEXT = 4096

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Variables read before any sandbox or inside the interpreter's startup: they run code the spec chose in the
# server's own process tree (bwrap is started with the container's environment) or break the kernel's start.
DENIED_ENV_PREFIXES = ("LD_", "PYTHON")
DENIED_ENV = frozenset({
    "GLIBC_TUNABLES", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "MALLOC_CHECK_",
    "MALLOC_TRACE", "BASH_ENV", "ENV",
    # set by the runtime: the GPUs (and the id) a container has are not the spec's to choose
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CELLHOP_CONTAINER_ID", "CELLHOP_GPU_TYPE",
    "CELLHOP_GPUS_SIMULATED", "CELLHOP_SECRET_KEYS",
})
ALLOWED_PYTHON_ENV = frozenset({
    "PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS", "PYTHONIOENCODING",
    "PYTHONUTF8", "PYTHONFAULTHANDLER", "PYTHONDEVMODE", "PYTHONOPTIMIZE", "PYTHONTRACEMALLOC", "PYTHONNOUSERSITE",
})


class SpecError(CellhopError, ValueError):
    """A container spec field holding something cellhop does not accept."""


def parse_memory(text) -> int | None:
    """'8G', '512M', '2GiB', 1024 (bytes) -> bytes; None or '' -> no limit."""
    if text is None or text == "":
        return None
    shown = str(text) if len(str(text)) <= 40 else f"{str(text)[:40]}..."
    value = size_in_bytes(text, units="kmgt")
    if value is None:
        raise SpecError(f"memory {shown!r} is not a size; write e.g. '512M' or '8G'")
    if value < MIN_MEMORY:
        unit = " bytes" if isinstance(text, int) else ""
        raise SpecError(f"memory {shown!r}{unit} is too small for a Python kernel; give at least 64M")
    if value > MAX_MEMORY:
        raise SpecError(f"memory {shown!r} is more than 1 PiB; give a limit this host could hold, e.g. '8G'")
    return value


def check_cpus(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CPUS:
        raise SpecError(f"container spec field 'cpus' is {str(value)[:40]!r}; give a whole number of CPUs "
                        f"from 1 to {MAX_CPUS}, or leave it out for all of the host's")
    return value


def check_seconds(value, name: str) -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0 <= value <= MAX_SECONDS):
        raise SpecError(f"container spec field {name!r} is {str(value)[:40]!r}; give a number of seconds from 0 "
                        f"to {MAX_SECONDS:.0f} (0: the control plane's default or none)")
    return float(value)


def check_text(value, name: str) -> str | None:
    """A string field with no NUL (it becomes part of a command line or a path)."""
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > MAX_TEXT:
        what = "contains a NUL byte" if isinstance(value, str) and "\x00" in value else "is not usable"
        raise SpecError(f"container spec field {name!r} {what}; give plain text of at most {MAX_TEXT} characters")
    return value


def check_workdir(value) -> str | None:
    """The working directory as text: absolute, no NUL (where it may be is workdir_policy's call)."""
    text = check_text(None if value is None else str(value), "workdir")
    if text is not None and not text.startswith("/"):
        raise SpecError(f"container spec field 'workdir' is {text[:200]!r}, a relative path; give the absolute "
                        "path of a folder (the notebook's folder, e.g. /home/me/project)")
    if text is not None and any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in text.split("/")):
        raise SpecError(f"container spec field 'workdir' has a name longer than 255 bytes ({text[:80]!r}...); "
                        "no folder can have it")
    return text


def check_pid(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PID:
        raise SpecError(f"container spec field 'owner_pid' is {str(value)[:40]!r}; give a process id "
                        f"(1 to {MAX_PID}) or leave it out")
    return value


def env_name_problem(name: str) -> str | None:
    """Why `name` may not be set in a container's environment by its spec, or None."""
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
        return ("is not an environment variable name (letters, digits and '_', not starting with a digit; "
                "no '=', NUL or space)")
    if name in DENIED_ENV or (name.startswith(DENIED_ENV_PREFIXES) and name not in ALLOWED_PYTHON_ENV):
        return ("would take over the interpreter, the dynamic loader or what the runtime sets (LD_*, PYTHONHOME, "
                "PYTHONPATH and other PYTHON* variables, CUDA_VISIBLE_DEVICES, ...); install packages in an "
                "image (cellhop.Image) instead")
    return None


def check_env(env) -> dict[str, str]:
    """A spec's `env`: {NAME: value} within the rules above; SpecError naming the first variable that is not."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise SpecError("container spec field 'env' must map variable names to strings")
    total = 0
    for name, value in env.items():
        problem = env_name_problem(name)
        if problem:
            raise SpecError(f"container spec field 'env': {str(name)[:80]!r} {problem}")
        if not isinstance(value, str):
            raise SpecError(f"container spec field 'env': the value of {name} must be a string, "
                            f"not {type(value).__name__}")
        if "\x00" in value:
            raise SpecError(f"container spec field 'env': the value of {name} contains a NUL byte")
        total += len(name.encode()) + len(value.encode("utf-8", "surrogatepass")) + 2
        if total > MAX_ENV_BYTES:
            raise SpecError(f"container spec field 'env' holds more than {MAX_ENV_BYTES // 1024} KiB; put large "
                            "data in a volume instead")
    return dict(env)

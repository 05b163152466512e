"""What a secret is made of: its name, its KEY=VALUE pairs (checked once, at the edge) and .env files.

Used by the notebook side (`cellhop.Secret`), the CLI and the control plane's SecretStore alike.
"""

from __future__ import annotations

import re

from .errors import SecretError, VolumePathError
from .volume_paths import volume_name

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables a secret may not set: cellhop's own and the ones that decide what the container runs.
_RESERVED_PREFIXES = ("CELLHOP_", "JPY_")
_RESERVED = {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "PATH", "PYTHONPATH", "PYTHONHOME", "LD_PRELOAD",
             "LD_LIBRARY_PATH", "IPYTHONDIR", "MPLCONFIGDIR", "HOME"}


def secret_name(name) -> str:
    try:
        return volume_name(name, "secret")
    except VolumePathError as exc:
        raise SecretError(str(exc)) from None


def check_values(values) -> dict[str, str]:
    """{KEY: value} with valid environment variable names and string values; raises SecretError."""
    if not isinstance(values, dict) or not values:
        raise SecretError("a secret needs at least one KEY=VALUE pair")
    for key, value in values.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise SecretError(f"secret key {key!r} is not an environment variable name; use letters, digits "
                              "and '_', not starting with a digit (e.g. HF_TOKEN)")
        if key in _RESERVED or key.startswith(_RESERVED_PREFIXES):
            raise SecretError(f"secret key {key!r} is reserved (cellhop or the container's runtime sets it); "
                              "pick another name")
        if not isinstance(value, str):
            raise SecretError(f"the value of secret key {key!r} must be a string, not {type(value).__name__}")
        if "\x00" in value:
            raise SecretError(f"the value of secret key {key!r} contains a NUL byte, which an environment "
                              "variable cannot hold")
    return dict(values)


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments, blank lines, `export`, single or double quotes)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise SecretError(f".env line {number} is not KEY=VALUE (the value is not shown)")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
            if raw.strip().split("=", 1)[1].strip()[0] == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"')
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return check_values(values)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """['KEY=VALUE', ...] from a command line."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SecretError(f"{key!r} has no '='; write KEY=VALUE (the value is never shown afterwards)")
        values[key] = value
    return check_values(values)

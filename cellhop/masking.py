"""Masking secret values in text, as CI systems do with their logs.

The runtime puts a container's secrets in its environment and names their keys (never the values)
in CELLHOP_SECRET_KEYS; whatever shows a container's output (its log, the container kernel's
messages: kernel/secret_masking.py) replaces each value with *****. Values shorter than 4
characters are not masked (they would blank out ordinary text).
"""

from __future__ import annotations

import os

SECRET_KEYS_ENV = "CELLHOP_SECRET_KEYS"  # names (never values) of a container's secret variables, for masking
MIN_MASKED = 4  # shorter values are not masked in output (they would blank out ordinary text)


def masked_values(values) -> list[str]:
    """What to mask in output for these secret values: each value and each long-enough line of it, longest first."""
    found = set()
    for value in values:
        if len(value) >= MIN_MASKED:
            found.add(value)
        for line in value.splitlines():
            line = line.strip()
            if len(line) >= MIN_MASKED:
                found.add(line)
    return sorted(found, key=len, reverse=True)


MASK = "*****"


def mask_text(text: str, values) -> str:
    """`text` with every secret value (see masked_values) replaced by *****."""
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def secret_values(environ=None) -> list[str]:
    """The strings to mask, from a container's own environment (its secrets' keys are in CELLHOP_SECRET_KEYS)."""
    environ = os.environ if environ is None else environ
    keys = [k for k in environ.get(SECRET_KEYS_ENV, "").split(",") if k]
    return masked_values(environ[k] for k in keys if environ.get(k))


def mask(value, secrets: list[str]):
    """A copy of a JSON-like value with each secret in its strings (not its keys) masked."""
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, dict):
        return {k: mask(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask(v, secrets) for v in value]
    return value

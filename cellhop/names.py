"""The one rule for the names and short texts people give cellhop: volumes, secrets, images,
container labels and owners.

A name may hold no control or format character: no C0/C1 control, no
bidirectional override or isolate (U+202A-U+202E, U+2066-U+2069), no
zero-width or other format character (Unicode category Cf), no line or
paragraph separator, no lone surrogate, no private-use or unassigned code
point. Such characters make a name that looks like another one in a
listing (`evil\u202egpj.exe` shows as `evilexe.jpg`), that breaks a log
line, or that cannot be typed back. `odd_character(text)` finds the first
one; `plain_text(text, what)` refuses it with a message that names it.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import CellhopError

# Categories that never belong in a name: controls, formats, surrogates, private use, unassigned,
# line and paragraph separators.
ODD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class BadName(CellhopError, ValueError):
    """A name or short text holding a character cellhop does not accept."""


def is_odd(char: str) -> bool:
    """Whether `char` is a control or format character (or otherwise invisible or untypable)."""
    return unicodedata.category(char) in ODD_CATEGORIES


def odd_character(text: str) -> str | None:
    """The first control or format character in `text`, or None."""
    return next((c for c in text if is_odd(c)), None)


def describe(char: str) -> str:
    """'U+202E (RIGHT-TO-LEFT OVERRIDE)'."""
    return f"U+{ord(char):04X}" + (f" ({unicodedata.name(char)})" if unicodedata.name(char, "") else "")


def plain_text(text, what: str, max_chars: int = 200, error: type[CellhopError] = BadName) -> str:
    """`text` when it is a string of at most `max_chars` characters with no control or format
    character; else `error` naming what was wrong."""
    if not isinstance(text, str):
        raise error(f"{what} must be a string, not {type(text).__name__}")
    if len(text) > max_chars:
        raise error(f"{what} is {len(text)} characters long; give at most {max_chars}")
    odd = odd_character(text)
    if odd is not None:
        shown = text if len(text) <= 80 else text[:80] + "..."
        raise error(f"{what} {shown!r} contains {describe(odd)}, a control or format character; "
                    "use visible characters only")
    return text


def simple_name(text, what: str, error: type[CellhopError] = BadName) -> str:
    """A volume or secret name: 1 to 63 ASCII letters, digits, '.', '_' or '-', starting with a letter
    or digit, not ending with '.' (a whole-string match: no trailing newline slips through)."""
    if isinstance(text, str) and _NAME.fullmatch(text) and not text.endswith("."):
        return text
    hint = ""
    if isinstance(text, str) and odd_character(text) is not None:
        hint = f" (it contains {describe(odd_character(text))}, a control or format character)"
    raise error(f"{what} name {text!r} is not allowed{hint}; use 1 to 63 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (e.g. 'datasets' or 'llama-weights')")


_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def is_module_name(text) -> bool:
    """Whether `text` is a dotted Python module name ('torch', 'transformers.models'): ASCII identifiers
    only, at most 100 characters (what a standby may be asked to import)."""
    return isinstance(text, str) and len(text) <= 100 and _MODULE.fullmatch(text) is not None

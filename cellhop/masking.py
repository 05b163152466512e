"""Masking secret values in output, as CI systems do with their logs, and the forms a value takes there.

The runtime puts a container's secrets in its environment and names their keys (never the values)
in CELLHOP_SECRET_KEYS; whatever shows a container's output (its log, the container kernel's
messages: kernel/secret_masking.py) replaces each form of each value with *****. Values shorter
than MIN_MASKED characters are not masked (they would blank out ordinary text).

The forms a secret value takes in output, so that masking finds it in them too:

A program rarely shows a value raw. `repr()` escapes its quotes and
backslashes, JSON escapes those and (by default) every non-ASCII character as
\\uXXXX, HTML escapes & < > " ', a URL percent-encodes it, an Authorization
header carries it in base64, and binary buffers hold it as UTF-8, UTF-16 or
UTF-32 (numpy's unicode arrays are UTF-32). For each value (and each line of
at least MIN_MASKED characters of a multi-line one):

- `text_forms(value)`: the value itself; the body of its `repr()` and
  `ascii()` with either quote, and of its UTF-8 bytes' `repr()`; its JSON
  string body (ASCII-only and not, and with < > & ' as \\u003c... as
  HTML-safe encoders write them); its HTML escapes (html.escape with and
  without quotes, and &#34;/&#39; as markupsafe writes them); its URL
  encodings (quote with and without '/' safe, quote_plus); the part of its
  base64 (standard and URL-safe) that does not depend on the bytes around it,
  at each of the three alignments, when that part has at least
  MIN_BASE64 characters; and the `repr()` body of its UTF-16 and UTF-32
  bytes (little and big endian).
- `byte_forms(value)`: the UTF-8 bytes of every text form, and the value's
  UTF-16 and UTF-32 bytes (LE and BE, without byte-order mark), each with the
  run of '*' of the same length in the same encoding that replaces it, so a
  buffer keeps its length and its layout.

Only one layer of escaping is covered (a repr of a JSON string of the value is
not), and only these encodings: what masking does and does not cover is
stated in docs/security.md, "Secret masking".
"""

from __future__ import annotations

import base64
import os
import html
import json
from urllib.parse import quote, quote_plus

SECRET_KEYS_ENV = "CELLHOP_SECRET_KEYS"  # names (never values) of a container's secret variables, for masking
MIN_MASKED = 4  # shorter values are not masked in output (they would blank out ordinary text)
MIN_BASE64 = 8  # a shorter base64 core would match ordinary text
MASK = "*****"
WIDE_ENCODINGS = ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")


def _py_body(value: str, quote_char: str, ascii_only: bool) -> str:
    """What repr() (or ascii()) writes between the quotes for `value`, delimited by `quote_char`."""
    escape = ascii if ascii_only else repr
    out = []
    for ch in value:
        if ch == quote_char:
            out.append("\\" + ch)
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "'\"":
            out.append(ch)
        else:
            out.append(escape(ch)[1:-1])
    return "".join(out)


def _bytes_body(data: bytes, quote_char: str) -> str:
    """What repr() writes between the quotes of b'...' for `data`, delimited by `quote_char`."""
    out = []
    for byte in data:
        ch = chr(byte)
        if ch == quote_char or ch == "\\":
            out.append("\\" + ch)
        elif ch in "'\"":
            out.append(ch)
        else:
            out.append(repr(bytes([byte]))[2:-1])
    return "".join(out)


def _json_forms(value: str) -> set[str]:
    forms = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    safe = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"}
    return forms | {"".join(safe.get(ch, ch) for ch in form) for form in forms}


def _html_forms(value: str) -> set[str]:
    markupsafe = html.escape(value, quote=False).replace('"', "&#34;").replace("'", "&#39;")
    return {html.escape(value), html.escape(value, quote=False), markupsafe}


def _url_forms(value: str) -> set[str]:
    return {quote(value, safe=""), quote(value), quote_plus(value)}


def _base64_cores(value: str) -> set[str]:
    """The characters of the value's base64 that are the same wherever it starts, at each alignment."""
    data, cores = value.encode(), set()
    for offset in range(3):
        whole = offset + len(data)
        start, end = -(-8 * offset // 6), 4 * (whole // 3)  # past the chars mixing in the bytes before/after
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(b"\0" * offset + data)[start:end].decode()
            if len(core) >= MIN_BASE64:
                cores.add(core)
    return cores


def text_forms(value: str) -> set[str]:
    """Every text form of `value` listed in the module docstring."""
    forms = {value}
    for q in "'\"":
        forms.add(_py_body(value, q, ascii_only=False))
        forms.add(_py_body(value, q, ascii_only=True))
        forms.add(_bytes_body(value.encode(), q))
        forms.update(_bytes_body(value.encode(e), q) for e in WIDE_ENCODINGS)
    forms |= _json_forms(value) | _html_forms(value) | _url_forms(value) | _base64_cores(value)
    return forms


def byte_forms(value: str) -> dict[bytes, bytes]:
    """{bytes of a form of `value`: the '*' bytes of the same length that replace it} (module docstring)."""
    forms = {form.encode(): b"*" * len(form.encode()) for form in text_forms(value)}
    for encoding in WIDE_ENCODINGS:
        data = value.encode(encoding)
        unit = len("*".encode(encoding))
        forms[data] = ("*" * (len(data) // unit)).encode(encoding)
    return forms


def masked_parts(values) -> list[str]:
    """Each value of at least MIN_MASKED characters, and each such line of a multi-line value."""
    found = set()
    for value in values:
        if len(value) >= MIN_MASKED:
            found.add(value)
        for line in value.splitlines():
            line = line.strip()
            if len(line) >= MIN_MASKED:
                found.add(line)
    return sorted(found)


def masked_values(values) -> list[str]:
    """What to mask in text for these secret values: every text form of each part, longest first."""
    forms = set()
    for part in masked_parts(values):
        forms |= text_forms(part)
    return sorted(forms, key=len, reverse=True)


def masked_bytes(values) -> list[tuple[bytes, bytes]]:
    """What to mask in binary buffers: (form, replacement) for each part's byte forms, longest first."""
    forms: dict[bytes, bytes] = {}
    for part in masked_parts(values):
        forms.update(byte_forms(part))
    return sorted(forms.items(), key=lambda item: len(item[0]), reverse=True)


def mask_text(text: str, values) -> str:
    """`text` with every form in `values` (from masked_values) replaced by *****."""
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def secret_values(environ=None) -> list[str]:
    """A container's secret values, from its own environment (its secrets' keys are in CELLHOP_SECRET_KEYS)."""
    environ = os.environ if environ is None else environ
    keys = [k for k in environ.get(SECRET_KEYS_ENV, "").split(",") if k]
    return [environ[k] for k in keys if environ.get(k)]

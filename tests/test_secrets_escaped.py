"""A secret value holding \\ ' " & < > is masked in the forms output gives it, from a real notebook kernel.

repr() and ascii() escape it, JSON escapes it (and non-ASCII as \\uXXXX), HTML
escapes it, a URL percent-encodes it, an Authorization header base64s it, a
display may use it as a dict key; none of these reach the notebook. Its UTF-16
bytes and a numpy array of it (UTF-32 in the buffer) stay in the container.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from cellhop.server_ext.secrets import SecretStore
from kernel_fixtures import start_cellhop_kernel

VALUE = "sk\\q'u\"o&t<e>d é-7f3a9c"


@pytest.fixture(scope="module")
def nb():
    state = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))
    SecretStore(state / "secrets").create("esc", {"ESC_TOKEN": VALUE})
    with start_cellhop_kernel(extra_arguments=(f"--Cellhop.state_dir={state}",)) as kernel:
        yield kernel
    shutil.rmtree(state, ignore_errors=True)


def strings_of(value, out: list[str]) -> list[str]:
    """Every string of the messages, dict keys included (checked one by one: a JSON dump would escape them)."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            strings_of(k, out)
            strings_of(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            strings_of(v, out)
    return out


def leaked_forms(ran) -> list[str]:
    raw = VALUE.encode()
    forms = {
        "raw": VALUE, "repr": repr(VALUE)[1:-1], "ascii": ascii(VALUE)[1:-1], "bytes repr": repr(raw)[2:-1],
        "json": json.dumps(VALUE)[1:-1], "json utf-8": json.dumps(VALUE, ensure_ascii=False)[1:-1],
        "html": html.escape(VALUE), "url": quote(VALUE, safe=""), "url form": quote_plus(VALUE),
        "base64 (after 'user:')": base64.b64encode(b"user:" + raw).decode()[8:-8],
    }
    texts = strings_of([ran.outputs, ran.reply], [])
    return [name for name, form in forms.items() if any(form in t for t in texts)]


SHOWS_IT = """%%remote --secret esc
import base64, hashlib, html, json, os, urllib.parse
import numpy as np
from IPython.display import HTML, display
v = os.environ["ESC_TOKEN"]
print(repr(v), ascii(v), v.encode())
print({"token": v})
print(json.dumps({"token": v}), json.dumps(v, ensure_ascii=False))
print(html.escape(v), urllib.parse.quote(v, safe=""), urllib.parse.urlencode({"t": v}))
print("Authorization: Basic", base64.b64encode(b"user:" + v.encode()).decode())
display({"application/json": {v: "the value as a key"}, "text/plain": repr({v: 1})}, raw=True)
display(HTML(f"<td>{html.escape(v)}</td>"))
print("sha", hashlib.sha256(v.encode()).hexdigest())
wide = v.encode("utf-16")
arr = np.array([v, "other"])
plain = 41 + 1
del v
"""


def test_escaped_forms_and_keys_are_masked_and_wide_encodings_stay(nb):
    ran = nb.ok(SHOWS_IT)
    assert f"sha {hashlib.sha256(VALUE.encode()).hexdigest()}" in ran.stdout  # the real value was there
    assert leaked_forms(ran) == []
    assert "*****" in ran.stdout and ran.displays("application/json")[0]["data"]["application/json"] == {
        "*****": "the value as a key"}
    assert "wide holds the value of a secret" in ran.stderr
    assert "arr holds the value of a secret" in ran.stderr
    got = nb.ok("print(plain, 'wide' in dir(), 'arr' in dir())").stdout.split()
    assert got == ["42", "False", "False"]

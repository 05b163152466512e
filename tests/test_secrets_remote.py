"""Secrets inside containers, from a real notebook kernel: injected as environment variables, masked in
everything streamed back, withheld from values that come back, and absent from the container's log (the
file on disk too, masked as it is written), the event stream, the status line and a saved .ipynb."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from cellhop.server_ext.secrets import SecretStore
from kernel_fixtures import kernel_env, short_runtime_dir, start_cellhop_kernel

VALUE = "sk-cellhop-7f3a9c1e5b2d"
SESSION_VALUE = "session-value-91c2e7"
DIGEST = hashlib.sha256(VALUE.encode()).hexdigest()


@pytest.fixture(scope="module")
def nb():
    state = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))
    SecretStore(state / "secrets").create("tok", {"API_TOKEN": VALUE})
    with start_cellhop_kernel(extra_arguments=(f"--Cellhop.state_dir={state}",)) as kernel:
        kernel.state = state
        kernel.ok("import cellhop, json, hashlib")
        yield kernel
    shutil.rmtree(state, ignore_errors=True)


def everything(ran) -> str:
    return json.dumps([ran.outputs, ran.reply])


PRINTS_IT = """%%remote --secret tok
import os, sys, logging, subprocess
from IPython.display import HTML, display
v = os.environ["API_TOKEN"]
print("stdout:", v)
print("stderr:", v, file=sys.stderr)
display(HTML(f"<b>{v}</b>"))
display({"text/plain": f"plain {v}"}, raw=True)
logging.getLogger("user").warning("logged %s", v)
subprocess.run(["sh", "-c", 'echo "from a subprocess: $API_TOKEN"'])
import time; time.sleep(0.3)  # fd-level output is read by a thread
print("sha", hashlib.sha256(v.encode()).hexdigest())
del v
f"last expression {os.environ['API_TOKEN']}"
"""


def test_a_secret_is_in_the_container_environment_and_masked_in_every_output(nb):
    ran = nb.ok(PRINTS_IT)
    assert f"sha {DIGEST}" in ran.stdout  # the real value was there
    text = everything(ran)
    assert VALUE not in text
    assert "stdout: *****" in ran.stdout and "stderr: *****" in ran.stderr
    assert "<b>*****</b>" in text and "plain *****" in text and "last expression *****" in text
    assert "logged *****" in text
    # ipykernel relays fd-level output (a subprocess's) except under pytest, where it stays in the log
    log = nb.ok("from cellhop.kernel.control_client import get_control_plane\n"
                f"print(get_control_plane().logs({ran.container!r}))").stdout
    assert "from a subprocess: *****" in text + log
    assert VALUE not in log


def test_an_exception_carrying_the_value_is_masked(nb):
    ran = nb.run("%%remote --secret tok\nimport os\nraise ValueError('bad token ' + os.environ['API_TOKEN'])")
    assert ran.status == "error" and ran.ename == "ValueError"
    assert ran.evalue == "bad token *****"
    assert VALUE not in everything(ran)


def test_a_variable_holding_the_value_stays_in_the_container(nb):
    ran = nb.ok("%%remote --secret tok\nimport os\ntoken = os.environ['API_TOKEN']\nlength = len(token)")
    assert "token holds the value of a secret" in ran.stderr
    got = nb.ok("print(json.dumps(['token' in globals(), length]))").stdout
    assert json.loads(got) == [False, len(VALUE)]


def test_cellhop_remote_gets_secrets_and_cannot_return_them(nb):
    nb.ok("@cellhop.remote(secrets=[cellhop.Secret('tok')])\n"
          "def digest():\n"
          "    import hashlib, os\n"
          "    return hashlib.sha256(os.environ['API_TOKEN'].encode()).hexdigest()\n"
          "@cellhop.remote(secrets=['tok'])\n"
          "def leak():\n"
          "    import os\n"
          "    return {'token': os.environ['API_TOKEN']}")
    assert nb.ok("print(digest.remote())").stdout.strip() == DIGEST
    ran = nb.run("leak.remote()")
    assert ran.status == "error" and "holds the value of a secret" in ran.evalue
    assert VALUE not in everything(ran)
    nb.ok("digest.shutdown(); leak.shutdown()")


def test_session_secret_from_dict_and_gpu_defaults(nb):
    nb.ok(f"s = cellhop.Secret.from_dict({{'SESSION_KEY': {SESSION_VALUE!r}}})")
    shown = nb.ok("%gpu --secret tok --secret {s.name}").stdout
    assert "secrets tok, session-" in shown
    ran = nb.ok("%%remote\nimport os\nprint(os.environ['SESSION_KEY'], os.environ['API_TOKEN'])")
    assert ran.stdout == "***** *****\n"
    on_disk = b"".join(p.read_bytes() for p in nb.state.rglob("*") if p.is_file())
    assert SESSION_VALUE.encode() not in on_disk
    nb.ok("%gpu --secret none")
    ran = nb.run("%%remote\nimport os\nprint(os.environ['SESSION_KEY'])")
    assert ran.status == "error" and ran.ename == "KeyError"


def test_the_value_is_absent_from_the_container_log_and_the_event_stream(nb):
    nb.ok("events = []\n"
          "from cellhop.kernel.control_client import get_control_plane\n"
          "sub = get_control_plane().subscribe(events.append)")
    ran = nb.ok("%%remote --secret tok --fresh\n"
                "import os, sys, time\n"
                "os.write(1, ('fd1 ' + os.environ['API_TOKEN'] + '\\n').encode())\n"
                "sys.__stderr__.write('raw stderr ' + os.environ['API_TOKEN'] + '\\n'); sys.__stderr__.flush()\n"
                "v = os.environ['API_TOKEN']\n"
                "os.write(2, ('split ' + v[:7]).encode()); time.sleep(0.3)  # two reads of the log's pipe\n"
                "os.write(2, (v[7:] + ' done\\n').encode()); del v")
    assert VALUE not in everything(ran)
    container = ran.container
    log = nb.ok(f"print(get_control_plane().logs({container!r}))").stdout
    assert VALUE not in log
    # the file itself, as anyone who can read the runtime folder would see it: masked before it was written
    path = Path(nb.runtime_dir) / "cellhop" / "containers" / container / "container.log"
    deadline = time.monotonic() + 10
    while b"split ***** done" not in path.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    on_disk = path.read_bytes()
    assert b"fd1 *****" in on_disk and b"raw stderr *****" in on_disk and b"split ***** done" in on_disk, on_disk
    assert VALUE.encode() not in on_disk and VALUE[7:].encode() not in on_disk
    events = nb.ok("sub.close()\nprint(json.dumps(events, default=str))").stdout
    assert container in events and '"tok"' in events  # the container's events name the secret
    assert VALUE not in events


class _File:
    def __init__(self):
        self.data, self.closed = b"", False

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_the_log_masks_values_split_across_reads(size):
    from cellhop.server_ext.runtimes.local import MaskedLog

    secrets = {"API_TOKEN": VALUE, "KEY": "line-one-aa\nline-two-bb", "TINY": "ab", "UNICODE": "pässwört-ключ"}
    text = (f"a {VALUE} b {VALUE}{VALUE} c sk-cel not a value; line-one-aa\nline-two-bb; pässwört-ключ; "
            f"ab stays; the end sk-cellhop-7f")
    file = _File()
    log = MaskedLog(file, secrets.values())
    data = text.encode()
    for at in range(0, len(data), size):
        log.write(data[at:at + size])
        assert VALUE.encode() not in file.data and "pässwört-ключ".encode() not in file.data
    log.close()
    assert file.closed
    # a multi-line value read line by line is masked line by line (each long-enough line is a value too)
    assert file.data.decode().replace("*****\n*****", "*****") == (
        "a ***** b ********** c sk-cel not a value; *****; *****; ab stays; the end sk-cellhop-7f")
    assert b"line-" not in file.data


NOTEBOOK_CELLS = [
    "%load_ext cellhop",
    "%gpu --secret tok",
    "%%remote\nimport os\nprint('the token is', os.environ['API_TOKEN'])",
    "%%remote --secret tok\nimport os\nos.environ['API_TOKEN']",
]


def test_a_saved_notebook_holds_no_secret_value(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    data = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))
    runtime = short_runtime_dir()
    try:
        SecretStore(data / "cellhop" / "secrets").create("tok", {"API_TOKEN": VALUE})
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK_CELLS])
        client = NotebookClient(notebook, timeout=120, kernel_name="python3")
        client.execute(env={**kernel_env(runtime), "JUPYTER_DATA_DIR": str(data)})
        path = tmp_path / "saved.ipynb"
        nbformat.write(notebook, path)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    saved = path.read_text()
    assert "the token is *****" in saved
    assert VALUE not in saved

"""Secrets outside a container: stored owner-only, values write-only through the store, the CLI and the
Python API, session secrets never on disk, and nothing that describes a container carries a value."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys

import pytest

from cellhop.container import ContainerSpec
from cellhop.errors import SecretError, SecretExists, SecretNotFound
from cellhop.masking import mask_text, masked_values
from cellhop.secret_values import parse_dotenv
from cellhop.server_ext.secrets import SecretStore

VALUE = "sk-cellhop-7f3a9c1e5b2d"
OTHER = "pw-0b9c8d7e6f"


@pytest.fixture
def state(runtime_root):
    return runtime_root / "state"


@pytest.fixture
def store(state):
    return SecretStore(state / "secrets")


def on_disk(folder) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file()) if folder.exists() else b""


def cli(state, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLHOP_CONTROL")}
    return subprocess.run([sys.executable, "-m", "cellhop.server_ext.cli", *args, "--state-dir", str(state)],
                          input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_stored_secrets_are_readable_by_their_owner_alone(store):
    view = store.create("hf", {"HF_TOKEN": VALUE, "HF_USER": "me"})
    assert view == {"name": "hf", "keys": ["HF_TOKEN", "HF_USER"], "created": view["created"], "session": False}
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.root / "hf.json").st_mode) == 0o600
    assert [p.name for p in store.root.iterdir()] == ["hf.json"]  # no temporary file left
    assert store.environment(["hf"]) == {"HF_TOKEN": VALUE, "HF_USER": "me"}


def test_listing_shows_names_and_keys_never_values(store):
    store.create("hf", {"HF_TOKEN": VALUE})
    store.create("db", {"DB_PASSWORD": OTHER}, session=True)
    listed = store.list()
    assert [(s["name"], s["keys"], s["session"]) for s in listed] == [("db", ["DB_PASSWORD"], True),
                                                                      ("hf", ["HF_TOKEN"], False)]
    text = json.dumps(listed) + json.dumps(store.get("hf")) + json.dumps(store.get("db"))
    assert VALUE not in text and OTHER not in text


def test_create_replace_delete_and_their_errors(store):
    store.create("hf", {"HF_TOKEN": VALUE})
    with pytest.raises(SecretExists, match="replace"):
        store.create("hf", {"HF_TOKEN": "other"})
    store.create("hf", {"HF_TOKEN": OTHER}, replace=True)
    assert store.environment(["hf"]) == {"HF_TOKEN": OTHER}
    store.delete("hf")
    with pytest.raises(SecretNotFound, match="cellhop secret create hf"):
        store.environment(["hf"])
    for bad, words in [({"1BAD": "v"}, "environment variable name"), ({"PATH": "v"}, "reserved"),
                       ({"CELLHOP_X": "v"}, "reserved"), ({"K": "a\x00b"}, "NUL"), ({"K": 3}, "string"),
                       ({}, "at least one")]:
        with pytest.raises(SecretError, match=words):
            store.create("bad", bad)
    with pytest.raises(SecretError, match="secret name"):
        store.create("../escape", {"K": "v"})
    assert store.list() == []


def test_dotenv_files(tmp_path):
    text = ("# a comment\n\nexport API_KEY='sk-1 2 3'\nDB_URL=\"postgres://u:p@h/db\"\nPLAIN=value # note\n"
            "MULTI=\"line1\\nline2\"\nEMPTY=\n")
    assert parse_dotenv(text) == {"API_KEY": "sk-1 2 3", "DB_URL": "postgres://u:p@h/db", "PLAIN": "value",
                                  "MULTI": "line1\nline2", "EMPTY": ""}
    with pytest.raises(SecretError, match="line 2 is not KEY=VALUE") as refused:
        parse_dotenv(f"A=1\nnot-an-assignment {VALUE}\n")
    assert VALUE not in str(refused.value)


def test_masking_covers_values_and_their_lines():
    secrets = masked_values([VALUE, "abc", "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\n-----END KEY-----"])
    assert "abc" not in secrets  # too short to mask without blanking ordinary text
    text = f"token={VALUE}; key line MIIBOgIBAAJBAK; abc"
    assert mask_text(text, secrets) == "token=*****; key line *****; abc"


def test_cli_round_trip_never_prints_a_value(state, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f"DB_PASSWORD={OTHER}\n")
    outputs = [cli(state, "secret", "create", "hf", f"HF_TOKEN={VALUE}"),
               cli(state, "secret", "create", "db", "--from-dotenv", str(env_file)),
               cli(state, "secret", "create", "typed", "TYPED_KEY", stdin=f"{VALUE}-typed\n"),
               cli(state, "secret", "list"), cli(state, "secret", "list", "--json")]
    for done in outputs:
        assert done.returncode == 0, done.stderr
    assert outputs[0].stdout == "secret hf: HF_TOKEN\n"
    listed = json.loads(outputs[4].stdout)
    assert [(s["name"], s["keys"]) for s in listed] == [("db", ["DB_PASSWORD"]), ("hf", ["HF_TOKEN"]),
                                                        ("typed", ["TYPED_KEY"])]
    store = SecretStore(state / "secrets")
    assert store.environment(["typed", "db"]) == {"TYPED_KEY": f"{VALUE}-typed", "DB_PASSWORD": OTHER}
    again = cli(state, "secret", "create", "hf", f"HF_TOKEN={VALUE}")
    assert again.returncode == 1 and "--replace" in again.stderr
    bad = cli(state, "secret", "create", "x", f"not valid={VALUE}")
    assert bad.returncode == 1 and "environment variable name" in bad.stderr
    assert cli(state, "secret", "delete", "typed").returncode == 0
    for done in [*outputs, again, bad]:
        assert VALUE not in done.stdout + done.stderr and OTHER not in done.stdout + done.stderr


def test_session_secrets_never_touch_the_disk(runtime_root, state):
    from contextlib import closing

    from cellhop.kernel.control_client import use_control_plane
    from cellhop.kernel.embedded_control_plane import EmbeddedControlPlane
    from cellhop.kernel.secret import Secret
    from cellhop.server_ext.config import Cellhop

    with closing(EmbeddedControlPlane(Cellhop(simulated_gpus="", runtime_root=str(runtime_root),
                                              state_dir=str(state)))) as client, use_control_plane(client):
        Secret.create("stored", API_KEY=OTHER)
        session = Secret.from_dict({"SESSION_KEY": VALUE})
        assert session.name.startswith("session-") and session.keys == ["SESSION_KEY"]
        assert VALUE not in repr(session) and VALUE.encode() not in pickle.dumps(session)
        assert pickle.loads(pickle.dumps(session)) == session
        assert {s["name"]: s["session"] for s in Secret.list()} == {"stored": False, session.name: True}
        assert VALUE.encode() not in on_disk(state) and VALUE.encode() not in on_disk(runtime_root)
        assert OTHER.encode() in on_disk(state / "secrets")  # the stored one is there, for contrast
        session.delete()
        assert [s["name"] for s in Secret.list()] == ["stored"]


def test_what_describes_a_container_names_secrets_only(make_manager, state):
    manager = make_manager(state_dir=str(state))
    manager.storage.secrets.create("hf", {"HF_TOKEN": VALUE})
    spec = ContainerSpec(gpu="none", owner="t", secrets=["hf"])
    events = []
    manager.subscribe(events.append)
    container = manager.start(spec)
    assert container.secret_env == {"HF_TOKEN": VALUE}
    described = json.dumps([spec.to_json(), container.to_dict(), events], default=str) + repr(container) + repr(spec)
    assert '"secrets": ["hf"]' in described
    assert VALUE not in described
    assert VALUE not in (container.directory / "sandbox" / "connection.json").read_text()
    manager.stop(container.id)
    with pytest.raises(SecretNotFound, match="no secret 'missing'"):
        manager.start(ContainerSpec(gpu="none", secrets=["missing"]))

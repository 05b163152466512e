"""`cellhop volume ...` and `cellhop secret ...` read c.Cellhop.state_dir from the Jupyter config files the
server reads (jupyter_config_path(): JUPYTER_CONFIG_DIR and the rest), so the CLI and the server see one store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cellhop.server_ext.secrets import SecretStore
from cellhop.server_ext.volumes import VolumeStore

VALUE = "sk-config-3c4d5e6f7a8b"


def cli(env, *args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cellhop.server_ext.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def configured(runtime_root):
    """A state directory holding volume 'datasets' (with a file) and secret 'hf', named only by a config file."""
    state = runtime_root / "configured-state"
    volumes = VolumeStore(state / "volumes")
    volumes.create("datasets")
    volumes.put("datasets", "train.csv", b"a,b\n1,2\n")
    SecretStore(state / "secrets").create("hf", {"HF_TOKEN": VALUE})
    config_dir = runtime_root / "jupyter-config"
    config_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELLHOP_CONTROL", "JUPYTER_CONFIG"))}
    env.update(JUPYTER_CONFIG_DIR=str(config_dir), JUPYTER_DATA_DIR=str(runtime_root / "jupyter-data"))
    return state, config_dir, env


@pytest.mark.parametrize("config_file", ["jupyter_server_config.json", "jupyter_server_config.py",
                                         "jupyter_cellhop_config.py"])
def test_cli_uses_the_state_dir_of_the_server_config(configured, config_file):
    state, config_dir, env = configured
    if config_file.endswith(".json"):
        (config_dir / config_file).write_text(json.dumps({"Cellhop": {"state_dir": str(state)}}))
    else:
        (config_dir / config_file).write_text(f"c.Cellhop.state_dir = {str(state)!r}\n")

    assert [v["name"] for v in json.loads(cli(env, "volume", "list", "--json").stdout)] == ["datasets"]
    assert "train.csv" in cli(env, "volume", "ls", "datasets").stdout
    listed = cli(env, "secret", "ls").stdout
    assert "hf" in listed and "HF_TOKEN" in listed and VALUE not in listed
    # --state-dir still wins over the config
    other = state.parent / "other-state"
    assert "no volumes" in cli(env, "volume", "list", "--state-dir", str(other)).stdout


def test_without_config_the_cli_does_not_see_that_store(configured):
    _, _, env = configured
    assert "no volumes" in cli(env, "volume", "list").stdout
    assert "no secrets" in cli(env, "secret", "list").stdout

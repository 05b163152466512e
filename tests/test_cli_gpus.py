"""`cellhop gpus` as a user runs it (the installed command, a child process): the simulated inventory
from the environment or from c.Cellhop.simulated_gpus in the Jupyter config the server reads (the two
agree), `--json` for scripts, and on a host with no GPU a message that says why and what to do.
(`cellhop demo`: test_cli.py and test_demo_notebook.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from cellhop.server_ext.gpu_inventory import load_inventory

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(bool(load_inventory(environ={}).gpus), reason="this host has real GPUs")]


def cellhop_gpus(tmp_path, *args, simulated: str | None = None, config: str = "") -> str:
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "jupyter_server_config.py").write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "CELLHOP_SIMULATED_GPUS"}
    env.update(JUPYTER_CONFIG_DIR=str(config_dir), JUPYTER_CONFIG_PATH=str(config_dir), HOME=str(tmp_path))
    if simulated is not None:
        env["CELLHOP_SIMULATED_GPUS"] = simulated
    command = shutil.which("cellhop")
    argv = [command] if command else [sys.executable, "-m", "cellhop.server_ext.cli"]
    done = subprocess.run([*argv, "gpus", *args], env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done
    return done.stdout


def test_cellhop_gpus_lists_the_simulated_inventory(tmp_path):
    out = cellhop_gpus(tmp_path, simulated="H100:2,A10G:1")
    assert out.splitlines()[0] == "GPUs (simulated: no real GPU behind these)"
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["H100", "H100", "A10G"], out
    listed = json.loads(cellhop_gpus(tmp_path, "--json", simulated="H100:2,A10G:1"))
    assert listed["simulated"] and [g["type"] for g in listed["gpus"]] == ["H100", "H100", "A10G"]
    assert [g["uuid"] for g in listed["gpus"]] == ["GPU-simulated-h100-0", "GPU-simulated-h100-1",
                                                   "GPU-simulated-a10g-0"]


def test_cellhop_gpus_reads_the_servers_config(tmp_path):
    listed = json.loads(cellhop_gpus(tmp_path, "--json", config='c.Cellhop.simulated_gpus = "A10G:1"\n'))
    assert [g["type"] for g in listed["gpus"]] == ["A10G"], listed


def test_cellhop_gpus_without_gpus_says_why_and_what_to_do(tmp_path):
    out = cellhop_gpus(tmp_path)
    assert out.startswith("No GPUs: ") and "CELLHOP_SIMULATED_GPUS" in out and "c.Cellhop.simulated_gpus" in out
    assert json.loads(cellhop_gpus(tmp_path, "--json"))["gpus"] == []

"""The demo notebook that README's first command opens runs top to bottom: in a kernel started by a
cellhop-enabled server with the inventory `cellhop demo` simulates (its first cell then changes
nothing), and headless with `jupyter nbconvert --execute` on a host without GPUs, where its first cell
loads cellhop and picks the same simulated inventory, saying so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from server_kernel_client import run

from cellhop.server_ext.cli import DEMO_SIMULATED
from cellhop.server_ext.gpu_inventory import load_inventory

pytestmark = pytest.mark.timeout(300)
DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.ipynb"


@pytest.fixture
def cellhop_gpus():
    return DEMO_SIMULATED


async def test_the_demo_notebook_runs_top_to_bottom(start_kernel):
    demo = nbformat.read(DEMO, as_version=4)
    _, kc = await start_kernel()
    outputs = []
    for cell in demo.cells:
        if cell.cell_type == "code":
            content, out, _ = await run(kc, cell.source, timeout=120)
            assert content["status"] == "ok", (cell.source, content.get("evalue"))
            outputs.append(out)
    assert outputs[0] == "", outputs[0]  # the first cell: the server's GPUs, nothing to set up or say
    text = "".join(outputs)
    assert "simulated" in text and "running in a container holding GPU-simulated-h100" in text
    assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in text


@pytest.mark.skipif(bool(load_inventory(environ={}).gpus), reason="this host has GPUs: the demo would use them")
def test_the_demo_runs_headless_with_nbconvert_on_a_simulated_inventory_it_declares(tmp_path, runtime_root):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELLHOP_SIMULATED", "CELLHOP_CONTROL"))}
    env["JUPYTER_RUNTIME_DIR"] = str(runtime_root)  # short: the embedded control plane's ipc sockets live there
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                           "--ExecutePreprocessor.timeout=240", str(DEMO), "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=280)
    assert done.returncode == 0, done.stderr[-4000:]
    ran = nbformat.read(tmp_path / "demo.ipynb", as_version=4)
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in ran.cells if c.cell_type == "code" for o in c.outputs)
    first = "".join(o.get("text", "") for o in ran.cells[1].outputs)
    assert "SIMULATED inventory (H100:2,A10G:1)" in first and "the GPUs are not" in first, first
    assert "simulated" in text and "running in a container holding GPU-simulated-h100" in text, text
    assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in text, text

"""The demo notebook that README's first command opens runs top to bottom, with no setup cell,
in a kernel started by a cellhop-enabled server with the inventory `cellhop demo` simulates."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from server_kernel_client import run

from cellhop.server_ext.cli import DEMO_SIMULATED

pytestmark = pytest.mark.timeout(300)
DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.ipynb"


@pytest.fixture
def cellhop_gpus():
    return DEMO_SIMULATED


async def test_the_demo_notebook_runs_top_to_bottom(start_kernel):
    demo = nbformat.read(DEMO, as_version=4)
    assert not any("load_ext" in c.source for c in demo.cells if c.cell_type == "code")  # no setup cell
    _, kc = await start_kernel()
    outputs = []
    for cell in demo.cells:
        if cell.cell_type == "code":
            content, out, _ = await run(kc, cell.source, timeout=120)
            assert content["status"] == "ok", (cell.source, content.get("evalue"))
            outputs.append(out)
    text = "".join(outputs)
    assert "simulated" in text and "running in a container holding GPU-simulated-h100" in text
    assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in text

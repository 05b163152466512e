"""`%%remote --async`: the values land in the notebook when the run ends, not only on `wait()`, and say so.

They land from the kernel's main thread between cells: while the notebook is
idle at once, and never in the middle of a cell's code (a cell running when
the run ends gets them after its code, with a quiet line saying so).
"""

from __future__ import annotations

import pytest

from kernel_fixtures import cellhop_kernel, is_status_line  # noqa: F401  (cellhop_kernel is a fixture)


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    nb = cellhop_kernel
    nb.ok("%%remote --no-pull\nwarm = True")  # the container is warm: async cells start at once
    return nb


def _text(msg) -> str:
    return msg["content"].get("data", {}).get("text/plain", "")


def test_values_land_when_the_run_ends_while_the_notebook_is_idle(nb):
    ran = nb.ok("%%remote --async\nimport time\ntime.sleep(1)\nlate_a = 41\nlate_b = 'x'")
    n = ran.reply["execution_count"]
    assert [d["data"]["text/plain"] for d in ran.displays()] == ["<RemoteRun remote cell: running>"]
    # no cell runs and nobody waits: the async cell's own status line says when they arrived
    seen = nb.iopub_until(lambda m: m["msg_type"] == "update_display_data"
                          and "late_a, late_b arrived in the notebook" in _text(m), timeout=60)
    assert seen and is_status_line(seen[-1]["content"])
    ran = nb.ok("print(late_a, late_b)")
    assert ran.stdout == "41 x\n", ran
    assert not any("arrived" in c.get("data", {}).get("text/plain", "") for _, c in ran.outputs), \
        "already landed: the next cell says nothing more"
    assert nb.ok(f"print(Out[{n}].status)").stdout == "done\n"


def test_values_never_land_in_the_middle_of_a_cell(nb):
    nb.ok("%%remote --async\n__import__('time').sleep(3)\nlate_c = 42")
    n = nb.ok("print('started')").reply["execution_count"] - 1
    # this cell runs while the run ends: its code never sees the value change under it ...
    ran = nb.ok(f"import time\nh = Out[{n}]\n"
                "while not h.done():\n"
                "    time.sleep(0.05)\n"
                "time.sleep(0.5)\n"
                "print('late_c' in globals())", timeout=60)
    assert ran.stdout == "False\n", ran
    # ... which lands right after it, with a quiet line in its output naming the async cell
    notes = [c["data"]["text/plain"] for t, c in ran.outputs if t == "display_data" and is_status_line(c)]
    assert notes == [f"late_c arrived from the async run of cell [{n}]"], ran
    assert nb.ok("print(late_c, h.wait(5)['late_c'])").stdout == "42 42\n"

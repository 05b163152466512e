"""Work waiting for a GPU shows, live, who holds it (which kernel, what, busy or idle for how long) and
its place in the queue; a function's call says so too (it waited silently before).

Two real notebook kernels of one host (they share GPU leases), simulated H100:2,A10G:1, real containers.
"""

from __future__ import annotations

import shutil

import pytest

from kernel_fixtures import QUEUE_TIMEOUT, is_status_line, short_runtime_dir, start_cellhop_kernel

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def runtime():
    path = short_runtime_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def first(runtime):
    with start_cellhop_kernel(runtime_dir=runtime) as kernel:
        yield kernel


@pytest.fixture(scope="module")
def second(runtime):
    with start_cellhop_kernel(runtime_dir=runtime) as kernel:
        yield kernel


def waiting_lines(ran) -> list[str]:
    return [c["data"]["text/plain"] for t, c in ran.outputs
            if t in ("display_data", "update_display_data") and is_status_line(c)
            and c["data"]["text/plain"].startswith("⏳ queued for")]


def test_a_cell_waiting_for_another_notebooks_gpu_says_who_holds_it(first, second):
    held = first.ok("%%remote --gpu A10G\nx = 1")
    ran = second.run("%%remote --gpu A10G\nprint('never')", timeout=60)
    assert ran.status == "error" and ran.ename == "QueueTimeout", ran
    lines = waiting_lines(ran)
    assert lines, ran
    assert all("next in line" in line and "interrupt the kernel to stop waiting" in line for line in lines), lines
    assert any(f"container {held.container[:8]}" in line and "held by: kernel " in line
               and "holds A10G [" in line for line in lines), lines
    # the first notebook's own control plane knows its container idles, and for how long
    ran = first.ok("from cellhop.kernel.extension import remote_cells\n"
                   "from cellhop.kernel.queue_status import holders_text\n"
                   "print(holders_text(remote_cells(get_ipython()).control, 'A10G', 'someone else'))")
    assert f"(%%remote, container {held.container[:8]}, idle " in ran.stdout, ran
    first.ok("%%remote --gpu A10G --fresh --no-pull\npass")  # (a new container; the old one's lease is gone)


def test_a_function_waiting_behind_the_notebooks_busy_cell_says_so(first):
    first.ok("%%remote --gpu A10G --async\nimport time\ntime.sleep(60)")
    first.ok("background = _")
    ran = first.run("import cellhop\n"
                    "fn = cellhop.remote(gpu='A10G')(lambda: 1)\n"
                    "fn.remote()", timeout=60)
    assert ran.status == "error" and ran.ename == "QueueTimeout", ran
    lines = waiting_lines(ran)
    assert lines and all("held by: this notebook (%%remote, container " in line for line in lines), ran
    assert ", busy)" in lines[-1], lines  # kept current while it waits (the cell's kernel is seen working)
    assert ran.elapsed >= QUEUE_TIMEOUT
    first.ok("background.cancel()\ntry:\n    background.wait(20)\nexcept BaseException:\n    pass")

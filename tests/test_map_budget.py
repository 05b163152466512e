"""`.map` of a cellhop.remote function in a real notebook kernel (simulated H100:2): it fans out over
exactly the GPUs the budget allows (two containers for eight one-item chunks, never more), keeps the
items' order, shows a tqdm progress bar in the cell, and with return_exceptions=True hands back the
exception objects in their places instead of raising."""

from __future__ import annotations

import pytest

from kernel_fixtures import cellhop_kernel, local_json  # noqa: F401  (cellhop_kernel is a fixture)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    cellhop_kernel.ok("import cellhop\n"
                      "@cellhop.remote(gpu='H100')\n"
                      "def where(x):\n"
                      "    import os\n"
                      "    if x == 'boom' or x == 5:\n"
                      "        raise ValueError(f'bad item {x}')\n"
                      "    return x * 10, os.environ['CELLHOP_CONTAINER_ID']\n")
    return cellhop_kernel


def test_map_fans_out_within_the_gpu_budget_in_order_with_a_progress_bar(nb):
    ran = nb.ok("out = where.map([0, 1, 2, 3, 4, 6, 7, 8], chunk_size=1)")
    out = local_json(nb, "out")
    assert [v for v, _ in out] == [0, 10, 20, 30, 40, 60, 70, 80]  # the items' order, not completion order
    assert len({cid for _, cid in out}) == 2  # one container per free H100: eight chunks, two containers
    assert local_json(nb, "len(where._live_sessions())") in (0, 2)
    # the bar: a tqdm widget (ipywidgets present) or tqdm's text on stderr, named after the function, out of 8
    bars = [c["data"]["text/plain"] for t, c in ran.outputs
            if t == "display_data" and "where.map" in c.get("data", {}).get("text/plain", "")]
    assert bars or "where.map" in ran.stderr, ran
    assert all("/8" in b for b in bars), bars
    quiet = nb.ok("where.map([1, 2], progress=False)")
    assert "where.map" not in quiet.stderr + str(quiet.outputs)  # progress=False: no bar


def test_return_exceptions_puts_each_exception_in_its_place(nb):
    out = local_json(nb, "[r if isinstance(r, tuple) else [type(r).__name__, str(r)] "
                         "for r in where.map([1, 5, 2, 'boom', 3], return_exceptions=True, progress=False)]")
    assert [o[0] for o in out] == [10, "ValueError", 20, "ValueError", 30]
    assert out[1][1] == "bad item 5" and out[3][1] == "bad item boom"
    ran = nb.run("where.map([1, 5, 2], progress=False)")  # without it the first failure is raised
    assert ran.status == "error" and ran.ename == "ValueError" and "bad item 5" in ran.evalue, ran

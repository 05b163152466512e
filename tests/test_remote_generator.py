"""`f.remote_gen(...)` streams a generator function's items from its container as the notebook asks for
them (kernel/remote_generator.py). Before, `.remote()` of a generator function failed with "cannot pickle
'generator' object"; it now says to use remote_gen. A real notebook kernel, real containers."""

from __future__ import annotations

import pytest

from kernel_fixtures import cellhop_kernel  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    nb = cellhop_kernel
    nb.ok(SETUP)
    return nb


SETUP = '''
import asyncio, cellhop

@cellhop.remote
def count(n, fail_at=None):
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"failed at {i}")
            yield {"i": i}
    finally:
        print("closed in the container", flush=True)

@cellhop.remote
async def tokens(n):
    for i in range(n):
        await asyncio.sleep(0.01)
        yield f"t{i}"
'''


def test_items_come_as_asked_and_leaving_early_closes_the_generator_there(nb):
    ran = nb.ok("print([x['i'] for x in count.remote_gen(5)])")
    assert ran.stdout == "closed in the container\n[0, 1, 2, 3, 4]\n", ran.stdout
    ran = nb.ok("for x in count.remote_gen(1000):\n    if x['i'] == 2:\n        break\nprint('left at', x['i'])")
    assert ran.stdout == "closed in the container\nleft at 2\n", ran.stdout  # its finally ran before the loop ended
    ran = nb.ok("print(list(tokens.remote_gen(3)))")
    assert ran.stdout == "['t0', 't1', 't2']\n", ran.stdout


def test_an_exception_mid_stream_is_raised_in_the_notebook_and_remote_says_to_use_remote_gen(nb):
    ran = nb.run("got = []\nfor x in count.remote_gen(5, fail_at=2):\n    got.append(x['i'])")
    assert ran.status == "error" and ran.ename == "ValueError" and ran.evalue == "failed at 2", ran
    assert nb.ok("print(got)").stdout == "[0, 1]\n"
    for call in ("count.remote(3)", "count.spawn(3)", "count.map([3])"):
        ran = nb.run(call)
        assert ran.status == "error" and ran.ename == "TypeError" and "count.remote_gen(...)" in ran.evalue, ran
    assert nb.ok("print(len(list(count.remote_gen(2))))").stdout.endswith("2\n")

"""The notebook's own prints and a container's relayed ones reach the cell in the order they were made.

ipykernel holds a notebook's prints up to 0.2 s before sending them, while a container's outputs are
relayed at once (kernel/output_relay.py): a loop printing a line and then calling `f.remote()`, which
prints too, showed every remote line before the local ones. The relay now sends what the notebook holds
first. A real notebook kernel, real containers.
"""

from __future__ import annotations

import pytest

from kernel_fixtures import cellhop_kernel  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    return cellhop_kernel


def test_local_and_remote_prints_interleave_in_the_order_they_were_made(nb):
    ran = nb.ok('''
import sys, cellhop

@cellhop.remote
def step(i):
    print("remote", i, flush=True)
    return i

for i in range(4):
    print("local", i)
    step.remote(i)
print("done")
''')
    expected = "".join(f"local {i}\nremote {i}\n" for i in range(4)) + "done\n"
    assert ran.stdout == expected, ran.stdout


def test_a_remote_generators_items_and_local_prints_interleave(nb):
    ran = nb.ok('''
import cellhop

@cellhop.remote
def tokens(n):
    for i in range(n):
        print("made", i, flush=True)
        yield i

for t in tokens.remote_gen(3):
    print("got", t)
''')
    assert ran.stdout == "".join(f"made {i}\ngot {i}\n" for i in range(3)), ran.stdout

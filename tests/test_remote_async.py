"""`cellhop.remote` on an `async def` function (and an async method of a `cellhop.cls`): in the container its
coroutine runs to the end, on the container's own loop, and its value comes back, as a plain function's does
(kernel/awaited_there.py); before, the call failed with "cannot pickle 'coroutine' object". A call past its `timeout=` raises RemoteTimeout saying so (sync or async; before,
a bare KeyboardInterrupt), an async one cancelled at its await with its `finally` run first, and the
container serves on. A real notebook kernel, real containers."""

from __future__ import annotations

import pytest

from kernel_fixtures import cellhop_kernel  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    return cellhop_kernel


SETUP = '''
import asyncio, time, cellhop

@cellhop.remote
async def double(x):
    await asyncio.sleep(0.05)
    return {"x2": 2 * x, "loop": type(asyncio.get_running_loop()).__name__}

@cellhop.remote
async def fails():
    await asyncio.sleep(0)
    raise ValueError("no such model")

@cellhop.remote(timeout=1)
async def slow():
    try:
        await asyncio.sleep(60)
    finally:
        print("cleaned up at its await", flush=True)

@cellhop.remote(timeout=1)
def slow_sync():
    time.sleep(60)
'''


def test_an_async_function_runs_to_its_end_in_the_container(nb):
    nb.ok(SETUP)
    ran = nb.ok("print(double.remote(21)['x2'], [r['x2'] for r in double.map(range(4))], "
                "double.spawn(5).wait(60)['x2'])")
    assert ran.stdout == "42 [0, 2, 4, 6] 10\n", ran
    ran = nb.run("fails.remote()")
    assert ran.status == "error" and ran.ename == "ValueError" and ran.evalue == "no such model", ran


def test_a_call_past_its_timeout_raises_remote_timeout_and_the_container_serves_on(nb):
    nb.ok(SETUP)
    for call in ("slow.remote()", "slow_sync.remote()"):
        ran = nb.run(call, timeout=60)
        assert ran.status == "error" and ran.ename == "RemoteTimeout", ran
        assert "ran past its timeout of 1 s and was interrupted" in ran.evalue, ran
        if call.startswith("slow."):
            assert "cleaned up at its await" in ran.stdout, ran  # cancelled, its finally ran in the call
    assert nb.ok("print(double.remote(1)['x2'])").stdout == "2\n"


CLASS = '''
import asyncio, cellhop

@cellhop.cls
class Client:
    @cellhop.enter
    async def connect(self):  # an async enter method runs to its end too
        await asyncio.sleep(0)
        self.calls = 0

    async def ask(self, x):
        if not hasattr(self, "lock"):  # made on the container's loop by the first call, used by the next
            self.lock = asyncio.Lock()
        async with self.lock:
            self.calls += 1
            await asyncio.sleep(0.01)
            return {"answer": x * 3, "calls": self.calls}
'''


def test_an_async_method_of_a_cls_instance_keeps_its_loop_across_calls(nb):
    nb.ok(CLASS)
    ran = nb.ok("c = Client()\nprint([c.ask.remote(i) for i in (1, 2, 3)])")
    assert ran.stdout == str([{"answer": 3 * i, "calls": i} for i in (1, 2, 3)]) + "\n", ran


def test_awaited_there_in_process():
    """The container's side alone: an async function called to its end, the loop kept between calls, and a
    call from the loop's own thread refused rather than waiting on itself for ever."""
    import asyncio

    from cellhop.kernel.awaited_there import AwaitedThere, call, run_to_end

    async def loop_of():
        return asyncio.get_running_loop()

    assert call(lambda: 5) == 5
    assert AwaitedThere(loop_of)() is AwaitedThere(loop_of)()  # one loop, kept

    async def nested():
        return call(loop_of)

    with pytest.raises(RuntimeError, match="await it there instead"):
        run_to_end(nested)

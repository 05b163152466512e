"""`cellhop.cls`: classes loaded once per container (a real notebook kernel, embedded control plane, real
bubblewrap containers, simulated GPUs). Enter methods run once per container, counted inside the container;
two notebook cells reuse the instance; other constructor arguments make another instance; `.map` over two
containers enters twice; exit methods run when the container stops (`.shutdown()`, the idle timeout, a kernel
shutdown request) and write to the container's log; a failing enter is raised at the call, with the remote
traceback, and keeps nothing."""

from __future__ import annotations

import json
import time

import pytest

from kernel_fixtures import cellhop_kernel  # noqa: F401  (cellhop_kernel is a fixture)

pytestmark = pytest.mark.timeout(300)

MODEL = '''
import builtins, os, cellhop

@cellhop.cls(gpu="H100")
class Model:
    def __init__(self, size=1):
        self.size = size

    @cellhop.enter
    def load(self):
        builtins.ENTERS = getattr(builtins, "ENTERS", 0) + 1  # this container's count
        self.loaded = builtins.ENTERS

    def who(self, x=None):
        return [os.environ.get("CELLHOP_CONTAINER_ID"), builtins.ENTERS, id(self), self.size, x]

    @cellhop.exit
    def close(self):
        print("model exit ran in", os.environ["CELLHOP_CONTAINER_ID"], "size", self.size)
'''


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    cellhop_kernel.ok(MODEL)
    return cellhop_kernel


def value(nb, code: str):
    """The JSON of the last line's expression, computed in the notebook (which calls the containers)."""
    *body, last = code.strip().splitlines()
    ran = nb.ok("\n".join([*body, "import json as _json", f"print(_json.dumps({last}))"]))
    return json.loads(ran.stdout.strip().splitlines()[-1])


def wait_for_log(nb, container: str, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        log = value(nb, f"cellhop.control_plane().logs({container!r})")
        if text in log:
            return log
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in the log of container {container} within {timeout} s: {log[-2000:]!r}")


def test_enter_runs_once_and_a_second_cell_reuses_the_instance(nb):
    first = value(nb, "Model().who.remote(1)")
    second = value(nb, "Model().who.remote(2)")  # another cell, another handle of the same arguments
    assert first[:4] == second[:4], (first, second)  # same container, one enter, the same object
    assert first[1] == 1 and first[3] == 1 and (first[4], second[4]) == (1, 2)
    spawned = value(nb, "Model().who.spawn(3).wait(60)")
    assert spawned[:4] == first[:4]

    other = value(nb, "Model(size=2).who.remote()")  # other constructor arguments: an instance of its own
    assert other[0] != first[0] and other[1] == 1 and other[3] == 2


def test_map_over_two_containers_enters_once_in_each(nb):
    first = value(nb, "Model().who.remote()")
    nb.ok("Model(size=2).shutdown()")  # frees the second H100 for the map
    results = value(nb, "Model().who.map(range(40), progress=False)")
    assert [r[4] for r in results] == list(range(40))
    by_container = {r[0]: (r[1], r[2]) for r in results}
    assert len(by_container) == 2, by_container
    assert first[0] in by_container and by_container[first[0]] == (1, first[2])  # the warm one, kept
    assert all(enters == 1 for enters, _ in by_container.values())  # each container entered once: twice in all
    assert len({(r[0], r[2]) for r in results}) == 2  # one object in each


def test_exit_runs_at_shutdown_into_the_container_log(nb):
    containers = value(nb, "sorted({r[0] for r in Model().who.map(range(8), progress=False)})")
    nb.ok("Model.shutdown()")
    for container in containers:
        log = wait_for_log(nb, container, f"model exit ran in {container} size 1")
        assert log.count("model exit ran") == 1, log
    # the next call makes the instance again, in a fresh container
    again = value(nb, "Model().who.remote()")
    assert again[0] not in containers and again[1] == 1


def test_exit_runs_when_the_idle_timeout_stops_the_container(nb):
    nb.ok("@cellhop.cls(idle_timeout=2)\n"
          "class Idle:\n"
          "    @cellhop.exit\n"
          "    def bye(self):\n"
          "        print('idle exit ran', flush=True)\n"
          "    def where(self):\n"
          "        return os.environ['CELLHOP_CONTAINER_ID']")
    container = value(nb, "Idle().where.remote()")
    wait_for_log(nb, container, "idle exit ran")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        [view] = value(nb, f"[c for c in cellhop.control_plane().containers() if c['id'] == {container!r}]")
        if view["phase"] == "exited":
            break
        time.sleep(0.5)
    assert view["phase"] == "exited" and "idle for 2 s" in json.dumps(view["exit"]), view


def test_exit_runs_on_a_kernel_shutdown_request(nb):
    nb.ok("@cellhop.cls\n"
          "class Asked:\n"
          "    @cellhop.exit\n"
          "    def bye(self):\n"
          "        print('asked exit ran', flush=True)\n"
          "    def where(self):\n"
          "        return os.environ['CELLHOP_CONTAINER_ID']")
    container = value(nb, "Asked().where.remote()")
    nb.ok("[session] = Asked()._runner._live_sessions()\n"
          "session.conn.send('control', 'shutdown_request', {'restart': False})")
    log = wait_for_log(nb, container, "asked exit ran")
    assert log.count("asked exit ran") == 1, log  # not again on the SIGTERM that may follow


def test_a_failing_enter_is_raised_at_the_call_and_keeps_nothing(nb):
    nb.ok("@cellhop.cls\n"
          "class Flaky:\n"
          "    def __init__(self):\n"
          "        builtins.MADE = getattr(builtins, 'MADE', 0) + 1\n"
          "        self.half = False\n"
          "    @cellhop.enter\n"
          "    def load(self):\n"
          "        builtins.TRIES = getattr(builtins, 'TRIES', 0) + 1\n"
          "        self.half = True\n"
          "        if builtins.TRIES == 1:\n"
          "            raise ValueError('no weights on attempt ' + str(builtins.TRIES))\n"
          "    def state(self, x=None):\n"
          "        return [builtins.MADE, builtins.TRIES, self.half]")
    ran = nb.run("Flaky().state.remote()")
    assert ran.status == "error" and ran.ename == "EnterFailed", ran
    assert "Flaky().load(), an @cellhop.enter method, failed in container" in ran.evalue, ran.evalue
    assert "ValueError: no weights on attempt 1" in ran.evalue and "not kept" in ran.evalue
    tb = ran.traceback_text  # the enter method's own frames, in the container (line 11 of its cell)
    assert "Traceback in the container" in tb and "line 11, in load" in tb, tb
    # the next call makes a whole new instance (no half-made one was kept) and enters it
    assert value(nb, "Flaky().state.remote()") == [2, 2, True]
    assert value(nb, "Flaky().state.remote()") == [2, 2, True]


def test_an_enter_that_always_fails_fails_a_whole_request_once(nb):
    nb.ok("@cellhop.cls(max_containers=1)\n"
          "class Broken:\n"
          "    @cellhop.enter\n"
          "    def load(self):\n"
          "        builtins.BROKEN = getattr(builtins, 'BROKEN', 0) + 1\n"
          "        raise OSError('attempt ' + str(builtins.BROKEN))\n"
          "    def f(self, x):\n"
          "        return x")
    errors = value(nb, "[str(e) for e in Broken().f.map(range(6), return_exceptions=True, chunk_size=6, "
                       "progress=False)]")
    assert len(errors) == 6 and all("OSError: attempt 1" in e for e in errors), errors  # one enter, not six
    ran = nb.run("Broken().f.remote(1)")
    assert ran.ename == "EnterFailed" and "OSError: attempt 2" in ran.evalue, ran  # a later request tries again


def test_handles_say_how_to_call_them(nb):
    ran = nb.run("Model().who(1)")
    assert ran.ename == "TypeError" and "who.remote(...)" in ran.evalue, ran
    ran = nb.run("Model().nothing_here")
    assert ran.ename == "AttributeError" and "Model has no method 'nothing_here'" in ran.evalue, ran
    ran = nb.run("cellhop.cls(lambda: 1)")
    assert ran.ename == "TypeError" and "decorates a class" in ran.evalue, ran
    ran = nb.run("cellhop.cls(memory='lots')(Model.__wrapped__)")
    assert ran.status == "error", ran  # options are checked at decoration, as cellhop.remote's
    assert value(nb, "Model(size=3).who.local(7)[1:]")[-2:] == [3, 7]  # .local: an instance in the notebook
    assert value(nb, "Model(size=3).method('who').local(8)[-1]") == 8


def test_a_failing_enter_comes_back_as_a_builtin_error_under_pull_safe(nb):
    nb.ok("@cellhop.cls(pull='safe')\n"
          "class Careful:\n"
          "    @cellhop.enter()\n"
          "    def load(self):\n"
          "        raise KeyError('weights')\n"
          "    def f(self):\n"
          "        return 1")
    ran = nb.run("Careful().f.remote()")
    assert ran.ename == "RuntimeError", ran  # not refused as a value the safe policy cannot rebuild
    assert ran.evalue.startswith("EnterFailed: Careful().load(), an @cellhop.enter method, failed"), ran.evalue

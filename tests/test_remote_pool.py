"""One container pool under %%remote and cellhop.remote (a real notebook kernel, embedded control plane):
one typed run spec, cells and functions of the same spec share a warm container, the notebook's idle
containers yield to its new requests (saying so quietly) but a busy one never does, and .map, .spawn
and shutdown() work over the shared pool."""

from __future__ import annotations

import pytest

from kernel_fixtures import QUEUE_TIMEOUT, cellhop_kernel  # noqa: F401  (cellhop_kernel is a fixture)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    nb = cellhop_kernel
    nb.ok("import cellhop, os\n"
          "def container_id(x=None):\n"
          "    import os\n"
          "    return os.environ['CELLHOP_CONTAINER_ID']")
    return nb


def local_ids(nb) -> list[str]:
    return nb.ok("print(*ids)").stdout.split()


def notes(ran) -> list[str]:
    """The quiet lines the pool showed in the cell (display data, like the status line)."""
    return [c["data"]["text/plain"] for t, c in ran.outputs
            if t == "display_data" and "idle container" in c.get("data", {}).get("text/plain", "")]


def test_a_run_spec_takes_every_shape_users_write_and_holds_one():
    from cellhop.kernel.run_spec import Mount, RunSpec
    from cellhop.gpu_request import GpuRequest

    a = RunSpec(gpu="H100", memory="1G", volumes=["data:/data:ro", {"name": "w", "path": "/w"}], secrets="hf")
    b = RunSpec(gpu=GpuRequest.parse("H100"), memory=2**30, secrets=("hf",),
                volumes=(Mount("data", "/data", True), Mount("w", "/w")))
    assert a == b and a.key() == b.key()
    assert a.volumes == (Mount("data", "/data", True), Mount("w", "/w", False))
    assert [str(m) for m in a.volumes] == ["data:/data:ro", "w:/w"]
    assert a.with_(timeout=5).key() == a.key()  # how long work may run does not pick another container
    assert a.with_(cpus=2).key() != a.key()
    spec = a.container_spec(owner="kernel 1234", label="%%remote")
    assert spec.volumes == [{"name": "data", "path": "/data", "read_only": True},
                            {"name": "w", "path": "/w", "read_only": False}]
    assert (str(spec.gpu), spec.memory, spec.secrets) == ("H100", 2**30, ["hf"])
    with pytest.raises(TypeError, match="no field"):
        a.with_(gpus="H100")


def test_idle_containers_of_the_notebook_yield_to_its_new_requests_but_a_busy_one_never(nb):
    # the cells' container holds the one A10G and is idle; a function needing an A10G (its own container)
    # gets it at once, not queueing behind its own notebook, and the notebook is told, quietly
    cell = nb.ok("%%remote --gpu A10G\nkept = 1")
    ran = nb.ok("fn = cellhop.remote(gpu='A10G')(container_id)\nprint(fn.remote())")
    assert ran.stdout.strip() not in ("", cell.container)
    assert ran.elapsed < QUEUE_TIMEOUT, ran
    [note] = notes(ran)
    assert cell.container in note and "A10G" in note and "idle" in note, note
    assert "idle container" not in ran.stderr

    # a cell running in the background holds the A10G (it made the function's idle container yield in
    # turn); while it runs, its container is busy: a new request waits its turn and leaves it alone
    ran = nb.ok("%%remote --gpu A10G --async\nimport time\ntime.sleep(60)")
    assert len(notes(ran)) == 1
    nb.ok("background = _")
    ran = nb.run("fn.remote()", timeout=60)
    assert ran.status == "error" and ran.ename == "QueueTimeout", ran
    assert notes(ran) == []
    assert nb.ok("print(background.status)").stdout == "running\n"
    nb.ok("background.cancel()\ntry:\n    background.wait(20)\nexcept BaseException:  # the remote KeyboardInterrupt\n"
          "    pass")


def test_map_spawn_and_shutdown_over_the_pool(nb):
    cell = nb.ok("%%remote --gpu A10G\nstate = 41")  # the notebook's cells keep their container throughout
    out = nb.ok("f = cellhop.remote(gpu='H100')(container_id)\n"
                "ids = f.map(range(40), progress=False)\n"
                "print(len(set(ids)), len(f._live_sessions()))").stdout
    assert out.split() == ["2", "2"]  # both H100s were free: two containers of its own
    assert nb.ok("print(f.spawn().wait(30) in ids)").stdout == "True\n"
    nb.ok("f.shutdown()")  # stops its containers, not the cells'
    assert nb.ok("print(len(f._live_sessions()))").stdout == "0\n"
    assert not set(local_ids(nb)) & set(nb.container_processes().values())
    ran = nb.ok("%%remote --gpu A10G\nprint(state + 1)")
    assert (ran.stdout, ran.container) == ("42\n", cell.container)

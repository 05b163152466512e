"""When a %%remote cell goes wrong: remote exceptions, values that cannot travel, a container that exits
(os._exit), and --async handles. Interrupts, timeouts, SIGKILL and out of memory: tests/test_faults.py."""

from __future__ import annotations

import time

import pytest

from kernel_fixtures import (  # noqa: F401  (cellhop_kernel is a fixture)
    cellhop_kernel,
    container_processes,
    short_runtime_dir,
    start_cellhop_kernel,
)


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    return cellhop_kernel


# -- errors raised by the cell ----------------------------------------------------------------------
def test_remote_exception_shows_remote_traceback_with_cell_lines(nb):
    ran = nb.run("%%remote\nnumerator = 1\nspare = 2\nratio = numerator / 0")
    assert ran.status == "error", ran
    assert ran.ename == "ZeroDivisionError" and ran.evalue == "division by zero"
    tb = ran.traceback_text
    assert "raised in the container" in tb
    assert "line 3" in tb and "ratio = numerator / 0" in tb, tb
    # shown once, not twice (the container's own error output is not relayed as well)
    assert [t for t, _ in ran.outputs].count("error") == 1


def test_remote_exception_raises_locally_as_its_type(nb):
    ran = nb.ok("try:\n"
                "    get_ipython().run_cell_magic('remote', '', 'values = [1]\\nvalues[5]')\n"
                "except IndexError as exc:\n"
                "    print('caught', type(exc).__name__, exc)\n")
    assert ran.stdout == "caught IndexError list index out of range\n"


def test_remote_syntax_error_is_reported(nb):
    ran = nb.run("%%remote\nvalue = (1,\n")
    assert ran.status == "error" and ran.ename == "SyntaxError", ran


# -- values that cannot travel --------------------------------------------------------------------------
def test_unpicklable_variable_is_named_and_nothing_runs(nb):
    nb.ok("import threading\nguard = threading.Lock()")
    ran = nb.run("%%remote\nprint('ran anyway')\nprobe = 1\nwith guard:\n    pass")
    assert ran.status == "error", ran
    assert ran.ename == "UnsendableVariable"
    assert "guard" in ran.evalue and "_thread.lock" in ran.evalue and "nothing ran" in ran.evalue
    assert "ran anyway" not in ran.stdout
    # nothing ran in the container either
    assert nb.ok("%%remote --no-pull\nprint('probe' in dir())").stdout == "False\n"


def test_value_that_cannot_come_back_is_named_and_others_arrive(nb):
    nb.ok("plain = None")
    ran = nb.ok("%%remote\nsquares = (i * i for i in range(3))\nplain = 5\nalso = 'x'")
    assert "squares" in ran.stderr and "generator" in ran.stderr, ran
    assert "plain" not in ran.stderr and "also" not in ran.stderr
    assert nb.ok("print(plain, also, 'squares' in globals())").stdout == "5 x False\n"
    # the value is still in the container, usable there
    assert nb.ok("%%remote --no-pull\nprint(list(squares))").stdout == "[0, 1, 4]\n"


# -- the container dies ---------------------------------------------------------------------------------
def test_container_exit_code_is_reported(nb):
    ran = nb.run("%%remote\nimport os\nos._exit(3)", timeout=60)
    assert ran.status == "error" and ran.ename == "ContainerDied", ran
    assert "exit code 3" in ran.evalue
    assert nb.ok("%%remote\nprint('next one works')").stdout == "next one works\n"


# -- --async ----------------------------------------------------------------------------------------
def test_async_returns_a_handle_and_wait_lands_values(nb):
    nb.ok("%%remote --no-pull\nwarm = True")
    ran = nb.ok("%%remote --async\nimport time\ntime.sleep(1.5)\nlate_value = 41")
    assert ran.elapsed < 1.0, ran  # returned at once
    assert [d["data"]["text/plain"] for d in ran.displays()] == ["<RemoteRun remote cell: running>"]
    nb.ok("handle = _")
    assert nb.ok("print('late_value' in globals(), handle.status)").stdout == "False running\n"
    ran = nb.ok("print(handle.wait(30)['late_value'], late_value, handle.status)")
    assert ran.stdout == "41 41 done\n"


def test_async_cancel_interrupts_it(nb):
    nb.ok("%%remote --no-pull\nbefore_cancel = 'kept'")
    nb.ok("%%remote --async\nimport time\ntime.sleep(60)\nnever = 1")
    ran = nb.ok("cancelled = _\n"
                "cancelled.cancel()\n"
                "try:\n"
                "    cancelled.wait(10)\n"
                "except BaseException as exc:\n"
                "    print('raised', type(exc).__name__)\n"
                "print(cancelled.status, 'never' in globals())")
    assert ran.stdout == "raised KeyboardInterrupt\ncancelled False\n"
    assert nb.ok("%%remote --no-pull\nprint(before_cancel)").stdout == "kept\n"


# -- containers and GPUs end with their notebook --------------------------------------------------------
def test_containers_and_gpu_leases_end_with_the_notebook_kernel():
    runtime = short_runtime_dir()
    with start_cellhop_kernel(runtime_dir=runtime) as first:
        first.ok("%gpu H100:2")
        ran = first.ok("%%remote\nheld = 1")
        assert ran.container in set(first.container_processes().values())
    deadline = time.monotonic() + 10
    while container_processes(runtime) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert container_processes(runtime) == {}
    # another notebook of the same host gets both H100s at once
    with start_cellhop_kernel(runtime_dir=runtime, queue_timeout=3) as second:
        second.ok("%gpu H100:2")
        ran = second.ok("%%remote\nimport os\nprint(os.environ['CUDA_VISIBLE_DEVICES'])")
        assert sorted(ran.stdout.split()[0].split(",")) == ["GPU-simulated-h100-0", "GPU-simulated-h100-1"]
        assert ran.elapsed < 3

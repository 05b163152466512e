"""Shared fixtures and the session's orphan check.

Fixtures:
- `runtime_root`: a fresh, short runtime folder (/tmp/ch-XXXXXXXX) for leases,
  queue tickets and containers, removed afterwards. Short on purpose: ipc
  socket paths inside it must stay under the AF_UNIX limit (~100 bytes), which
  pytest's own tmp_path would exceed.
- `make_manager(**config)`: ContainerManagers over a simulated inventory
  (SIMULATED_GPUS unless `simulated_gpus=` says otherwise) in `runtime_root`;
  each is closed at teardown, and then none of its container kernels may be left.
- `manager`: one such manager with the default configuration.
- `python_child(script, *args)`: a line-driven Python subprocess (see
  processes.PythonChild), killed at teardown if still running.
- `jp_server_config` (pytest-jupyter's, overridden): a test server with the cellhop
  extension over the simulated inventory `cellhop_gpus` (a module overrides that
  fixture); `control_plane`: that server's ControlPlane; `start_kernel()`: kernels
  of that server, as JupyterLab starts them (drive them with server_kernel_client.run).
- `fake_nvml_dir`: a folder with the fake libnvidia-ml.so.1 built from tests/fake_nvml.
- `summary_lines`: a list a test module appends lines to (its counts, e.g. test_faults.py's); they are
  shown at the end of the run's output.

At the end of the session no container kernel started by it may be running:
the check finds them through an environment variable every process of the
session inherits, kills any it finds and fails the run, naming them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from processes import SESSION_ENV, PythonChild, container_kernel_pids, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

SIMULATED_GPUS = "H100:2,A10G:1"


# -- the session's orphan check -------------------------------------------------------
def pytest_configure(config):
    os.environ[SESSION_ENV] = f"{os.getpid()}-{secrets.token_hex(4)}"
    os.environ["CELLHOP_PASS_ENV"] = SESSION_ENV  # containers get an allow-listed environment: add the tag
    # Standby containers (c.Cellhop.standby) are tested where a test asks for them (test_standby.py); every
    # other control plane of the suite (test servers included, they inherit this) starts none, so the
    # containers a test sees are the ones it started.
    os.environ.setdefault("CELLHOP_STANDBY", "0")


def pytest_sessionfinish(session, exitstatus):
    tag = os.environ.get(SESSION_ENV)
    if not tag:
        return
    deadline = time.monotonic() + 10  # stops still in flight get a moment to finish
    while (orphans := container_kernel_pids(session=tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not orphans:
        return
    described = []
    for pid in orphans:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        described.append(f"  pid {pid}: {cmdline[:200]}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_sep("=", "container kernels left running after the tests (now killed)", red=True, bold=True)
        for line in described:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- counts test modules report at the end of the run ---------------------------------------
_SUMMARY_LINES = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def summary_lines(pytestconfig) -> list[str]:
    return pytestconfig.stash.setdefault(_SUMMARY_LINES, [])


def pytest_terminal_summary(terminalreporter):
    lines = terminalreporter.config.stash.get(_SUMMARY_LINES, [])
    if lines:
        terminalreporter.write_sep("=", "counts")
        for line in lines:
            terminalreporter.write_line(line)


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture
def runtime_root():
    path = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_manager(runtime_root):
    from cellhop.server_ext.config import Cellhop
    from cellhop.server_ext.container_manager import ContainerManager

    managers = []

    def make(simulated_gpus: str = SIMULATED_GPUS, **config):
        """`config`: c.Cellhop settings, and the local runtime's own (c.LocalRuntime: network, default_pids...)."""
        from traitlets.config import Config

        from cellhop.server_ext.runtimes.local import LocalRuntime

        config.setdefault("runtime_root", str(runtime_root))
        config.setdefault("workdir_roots", [str(runtime_root / "work")])  # tests' working folders live there
        own = Config(config.pop("config", None) or {})
        for name in (set(LocalRuntime.class_own_traits(config=True)) - set(Cellhop.class_traits())) & set(config):
            own.LocalRuntime[name] = config.pop(name)
        manager = ContainerManager(Cellhop(config=own, simulated_gpus=simulated_gpus, **config))
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.close()
    for manager in managers:
        wait_until(lambda m=manager: not container_kernel_pids(m.root), timeout=15,
                   what=f"the container kernels under {manager.root} to be gone after close()")


@pytest.fixture
def manager(make_manager):
    return make_manager()


# -- a real jupyter_server with cellhop (pytest-jupyter's jp_serverapp, jp_fetch, jp_ws_fetch) ----
@pytest.fixture
def cellhop_gpus():
    """The simulated inventory of the test server; a module overrides this fixture to change it."""
    return "H100:1,A10G:1"


@pytest.fixture
def cellhop_settings():
    """More c.Cellhop settings of the test server; a module overrides this fixture to add some."""
    return {}


@pytest.fixture
def jp_server_config(runtime_root, cellhop_gpus, cellhop_settings):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": cellhop_gpus, "runtime_root": str(runtime_root), "idle_timeout": 0,
                    **cellhop_settings},
    }


@pytest.fixture
def control_plane(jp_serverapp):
    """The test server's own ControlPlane object."""
    return jp_serverapp.web_app.settings["cellhop_control_plane"]


@pytest.fixture
def start_kernel(jp_serverapp, jp_asyncio_loop, http_server_client):
    """Start kernels through the test server's kernel manager (as JupyterLab would); shut down at teardown.

    Requesting http_server_client makes the test server serve HTTP, which its kernels call.
    """
    km = jp_serverapp.kernel_manager
    clients = []

    async def start():
        kid = await km.start_kernel(kernel_name="python3", path="")
        kc = km.get_kernel(kid).client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        clients.append((kid, kc))
        return kid, kc

    yield start

    async def shutdown():
        for kid, kc in clients:
            kc.stop_channels()
            if kid in km:
                await km.shutdown_kernel(kid, now=True)

    jp_asyncio_loop.run_until_complete(shutdown())


@pytest.fixture(scope="session")
def fake_nvml_dir(tmp_path_factory):
    """A folder holding the fake libnvidia-ml.so.1 (tests/fake_nvml), compiled with gcc.

    With it on LD_LIBRARY_PATH the unmodified pynvml loads it; FAKE_NVML_DEVICES configures it.
    """
    import subprocess

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed, so the fake libnvidia-ml.so.1 cannot be built")
    out = tmp_path_factory.mktemp("fake_nvml")
    source = Path(__file__).parent / "fake_nvml" / "fake_nvml.c"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(out / "libnvidia-ml.so.1"),
                    str(source)], check=True, capture_output=True, text=True)
    return out


@pytest.fixture
def python_child():
    children: list[PythonChild] = []

    def start(script: str, *args, env: dict | None = None) -> PythonChild:
        child = PythonChild(script, *args, env=env)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()

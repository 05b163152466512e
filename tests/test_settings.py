"""c.Cellhop settings that change how a container runs, seen from inside a real container: with
sandbox = "none" the container kernel runs unsandboxed (no pid namespace: its /proc/1 is the host's
init and its pid is its host pid) and the runtime says so, naming the setting. (transport = "tcp":
test_runtime_config.py and test_container_boundary.py; start_timeout: test_faults.py; default_cpus and
default_memory: test_resource_options.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_container_boundary import NO_SANDBOX, start, value

pytestmark = pytest.mark.timeout(120)


def test_sandbox_none_runs_the_container_unsandboxed_and_says_so(make_manager):
    manager = make_manager(sandbox="none")
    assert "unsandboxed (c.Cellhop.sandbox = 'none')" in manager.runtime.describe()
    container = start(manager)
    try:
        seen = value(container, "import os\nr = (open('/proc/1/cmdline', 'rb').read(), os.getpid())")
        assert seen == (Path("/proc/1/cmdline").read_bytes(), manager.runtime._kernel_pid(container))
    finally:
        manager.stop(container.id)


@pytest.mark.skipif(NO_SANDBOX is not None, reason=f"{NO_SANDBOX} (`cellhop doctor` says what to do)")
def test_a_sandboxed_container_has_its_own_pid_namespace(make_manager):
    """The same observation under bubblewrap differs (so the one above can fail)."""
    manager = make_manager(sandbox="bubblewrap")
    container = start(manager)
    try:
        cmdline, pid = value(container, "import os\nr = (open('/proc/1/cmdline', 'rb').read(), os.getpid())")
        assert cmdline != Path("/proc/1/cmdline").read_bytes() and pid != manager.runtime._kernel_pid(container)
    finally:
        manager.stop(container.id)

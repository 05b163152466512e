"""On a host without GPUs every "no GPUs" message says how to get a simulated inventory, and `cellhop
gpus` reads the same Jupyter config as the server (so it agrees with the server and the demo).

Run as a user would: the `cellhop` command and IPython with `%load_ext cellhop`, in subprocesses with
a fresh HOME and no simulated inventory in their environment. Skipped on a host with GPUs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cellhop.server_ext.gpu_inventory import load_inventory

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(bool(load_inventory(environ={}).gpus), reason="this host has GPUs")]

HINT = 'CELLHOP_SIMULATED_GPUS="H100:2,A10G:1"'


@pytest.fixture
def user_env(tmp_path, runtime_root):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "CELLHOP_SIMULATED", "CELLHOP_CONTROL"))}
    # the control plane's runtime files go in a short folder (ipc socket paths must stay short)
    return {**env, "HOME": str(home), "JUPYTER_RUNTIME_DIR": str(runtime_root)}


def _run(argv, env, cwd) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_cellhop_gpus_says_how_to_simulate_and_reads_the_servers_config(user_env, tmp_path):
    cellhop = [sys.executable, "-m", "cellhop.server_ext.cli", "gpus"]
    text = _run(cellhop, user_env, tmp_path)
    assert "No GPUs" in text and HINT in text and "c.Cellhop.simulated_gpus" in text, text

    config = tmp_path / "home" / ".jupyter" / "jupyter_server_config.py"
    config.parent.mkdir()
    config.write_text("c.Cellhop.simulated_gpus = 'A10G:1'\n")
    text = _run(cellhop, user_env, tmp_path)
    assert "GPUs (simulated" in text and "A10G" in text and "No GPUs" not in text, text


def test_gpu_and_a_gpu_request_in_ipython_say_how_to_simulate(user_env, tmp_path):
    code = "\n".join([
        "ip = get_ipython()",
        "ip.run_line_magic('load_ext', 'cellhop')",
        "ip.run_line_magic('gpu', '')",
        "try:",
        "    ip.run_line_magic('gpu', 'H100')",
        "except Exception as e:",
        "    print('REFUSED:', e)",
        "import cellhop.kernel.control_client as c; c.reset_control_plane()",
    ])
    text = _run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", "-c", code], user_env, tmp_path)
    listing = text[text.index("GPUs: none"):]
    assert HINT in listing.splitlines()[0], text
    refusal = text[text.index("cannot satisfy GPU request 'H100'"):]
    assert HINT in refusal, text


def test_the_gpu_monitor_on_a_host_without_gpus_says_how_to_simulate():
    from test_gpu_monitor import _FakeControl

    from cellhop.widgets.gpu_monitor import GpuMonitor

    control = _FakeControl()
    monitor = GpuMonitor(control=control)
    try:
        control.on_event({"type": "hello", "containers": [], "interval": 1, "paused": False,
                          "gpus": {"gpus": [], "simulated": False, "reason": "no NVIDIA driver library",
                                   "driver_version": None, "runtime": "local"}})
        assert monitor.message.startswith("No GPUs: no NVIDIA driver library."), monitor.message
        assert HINT in monitor.message, monitor.message
    finally:
        monitor.close()

"""`cellhop doctor` says what this host enforces and what it cannot, with what to do, and exits 1 only
when an essential piece is missing: run as a user runs it (a subprocess), on this host as it is, with
bubblewrap taken off PATH, with a bubblewrap that cannot make namespaces (as in an unprivileged Docker
container: the script prints what bwrap prints there), and with the fake NVML the tests build.
`cellhop doctor --gpu` on a host without GPUs says so and checks the rest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from cellhop.server_ext.doctor import NAMESPACE_FIX, bubblewrap_problem
from cellhop.server_ext.gpu_inventory import load_inventory

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"{bubblewrap_problem()}")]
DOCTOR = [sys.executable, "-m", "cellhop.server_ext.cli", "doctor"]


def _doctor(*args: str, env: dict | None = None, timeout: float = 240) -> tuple[int, str]:
    done = subprocess.run([*DOCTOR, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return done.returncode, done.stdout + done.stderr


def test_on_this_host_every_piece_is_reported_and_the_essentials_pass():
    status, text = _doctor()
    assert status == 0, text
    for line in ("[ok  ] bubblewrap:", "user namespaces:", "network namespaces:", "slirp4netns:", "memory limit:",
                 "pids limit:", "cpu limit:", "GPUs (NVML):", "Ray:", "The essentials are there"):
        assert line in text, (line, text)
    if not load_inventory(environ={}).gpus:
        assert "[--  ] GPUs (NVML): none" in text and "CELLHOP_SIMULATED_GPUS" in text, text


def test_without_bubblewrap_it_says_what_to_install_and_fails(tmp_path):
    python_only = tmp_path / "bin"
    python_only.mkdir()
    status, text = _doctor(env={"PATH": str(python_only)})
    assert status == 1, text
    assert "[FAIL] bubblewrap: not installed" in text and "to fix: apt-get install bubblewrap" in text, text
    assert "cellhop cannot sandbox containers on this host" in text


def test_a_bubblewrap_that_cannot_make_namespaces_fails_with_what_to_configure(tmp_path):
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "bwrap").write_text("#!/bin/sh\n"
                                "[ \"$1\" = --version ] && { echo 'bubblewrap 0.8.0'; exit 0; }\n"
                                "echo 'bwrap: No permissions to creating new namespace, likely because the kernel "
                                "does not allow non-privileged user namespaces.' >&2\nexit 1\n")
    (shim / "bwrap").chmod(0o755)
    status, text = _doctor(env={"PATH": f"{shim}:{os.environ['PATH']}"})
    assert status == 1, text
    assert "[FAIL] bubblewrap:" in text and "cannot make a sandbox here" in text and "No permissions" in text, text
    assert NAMESPACE_FIX in text


def test_each_gpu_is_listed_with_its_device_files(fake_nvml_dir):
    status, text = _doctor(env={"LD_LIBRARY_PATH": str(fake_nvml_dir),
                                "FAKE_NVML_DEVICES": "NVIDIA H100 80GB HBM3:81559:0;NVIDIA A10G:23028:na"})
    assert status == 0, text  # GPUs are not essential
    assert "[ok  ] GPUs (NVML): 2 GPU(s), driver 550.54.15" in text, text
    for index, kind, minor in ((0, "H100", 7), (1, "A10G", 8)):
        line = next(x for x in text.splitlines() if x.startswith(f"[--  ] GPU {index}:"))
        assert kind in line and f"/dev/nvidia{minor}" in line and "missing" in line, text  # no such files here
    assert "load the NVIDIA kernel modules" in text


@pytest.mark.skipif(bool(load_inventory(environ={}).gpus), reason="this host has GPUs: --gpu runs on them")
def test_doctor_gpu_without_a_gpu_says_so_and_checks_the_rest(runtime_root):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: the fake NVML cannot be built")
    status, text = _doctor("--gpu", env={"JUPYTER_RUNTIME_DIR": str(runtime_root)})
    assert status == 0, text
    assert "this host has no GPU" in text and "cannot be checked here" in text, text
    assert "[ok  ] fake NVML: the inventory reads [('H100'" in text, text
    assert "[ok  ] the container was given one GPU: 'GPU-simulated-h100-0'" in text, text
    assert "[ok  ] it sees only that GPU: /dev files []" in text, text
    assert "[ok  ] the metric stream saw the 1 GiB" in text, text
    assert "[ok  ] a 1024x1024 matmul" in text, text
    assert "FAIL" not in text, text

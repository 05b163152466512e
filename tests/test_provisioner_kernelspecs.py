"""`jupyter cellhop kernelspec install` and the kernelspecs it writes; the generated launcher specs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cellhop.server_ext.kernelspecs import default_name, display_name, generated_kernelspecs, kernelspec_dict
from cellhop.inventory import Inventory, parse_simulated_spec


def test_names_and_display_names():
    assert default_name("H100") == "cellhop-h100" and default_name("H100:2") == "cellhop-h100x2"
    assert display_name("H100") == "Python 3 · H100" and display_name("H100:2") == "Python 3 · H100 ×2"
    assert display_name("A10G", simulated=True) == "Python 3 · A10G (simulated)"


def test_a_kernelspec_selects_the_cellhop_provisioner_with_its_request():
    spec = kernelspec_dict("h100:2", cpus=4, memory="16G")
    assert spec["argv"][1:] == ["-m", "cellhop.kernel.container_kernel", "-f", "{connection_file}"]
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "cellhop",
        "config": {"gpu": "H100:2", "image": None, "cpus": 4, "memory": "16G", "volumes": [], "secrets": []}}
    assert spec["display_name"] == "Python 3 · H100 ×2" and spec["interrupt_mode"] == "signal"


def test_generated_specs_follow_the_inventory():
    inventory = Inventory(gpus=parse_simulated_spec("H100:4,L4:1"), simulated=True)
    specs = generated_kernelspecs(inventory)
    assert {n: s.display_name for n, s in specs.items()} == {
        "cellhop-h100": "Python 3 · H100 (simulated)", "cellhop-h100x4": "Python 3 · H100 ×4 (simulated)",
        "cellhop-l4": "Python 3 · L4 (simulated)"}
    assert generated_kernelspecs(Inventory(reason="no NVIDIA driver")) == {}


@pytest.mark.parametrize("command", [["-m", "cellhop.server_ext.cli"], ["-c", "from cellhop.server_ext.cli import "
                                                                               "jupyter_main; jupyter_main()"]])
def test_the_install_command_writes_a_kernelspec_jupyter_finds(tmp_path, command):
    env_prefix = tmp_path / "prefix"
    run = subprocess.run([sys.executable, *command, "kernelspec", "install", "--gpu", "A10G", "--name", "gpu-a",
                          "--prefix", str(env_prefix)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "gpu-a" in run.stdout and "Python 3 · A10G" in run.stdout
    spec = json.loads((env_prefix / "share/jupyter/kernels/gpu-a/kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"]["gpu"] == "A10G"
    assert (env_prefix / "share/jupyter/kernels/gpu-a/logo-64x64.png").exists()
    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager(kernel_dirs=[str(env_prefix / "share/jupyter/kernels")]).get_kernel_spec("gpu-a")
    assert found.metadata["kernel_provisioner"]["provisioner_name"] == "cellhop"


@pytest.mark.parametrize("args,says", [(["--gpu", "Z999"], "Z999"), (["--gpu", "none"], "needs one"),
                                       (["--gpu", "H100", "--name", "bad name"], "kernel name")])
def test_the_install_command_explains_bad_input(tmp_path, args, says):
    run = subprocess.run([sys.executable, "-m", "cellhop.server_ext.cli", "kernelspec", "install", *args,
                          "--prefix", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and says in run.stderr, run.stderr
    assert not (tmp_path / "share").exists()

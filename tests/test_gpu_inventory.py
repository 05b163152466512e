"""GPU inventory: type names, simulated specs, and NVML through a fake libnvidia-ml.so.1.

The NVML tests compile tests/fake_nvml/fake_nvml.c into a temporary folder as
libnvidia-ml.so.1 and run the code under test in a subprocess whose
LD_LIBRARY_PATH points there, so the unmodified pynvml loads the fake.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cellhop.errors import CellhopError, SimulatedInventoryError
from cellhop.gpu_types import GPU_TYPES, canonical_type, type_from_nvml
from cellhop.inventory import SIMULATED_ENV, parse_simulated_spec
from cellhop.server_ext.gpu_inventory import load_inventory

MIB = 2**20
TWO_DEVICES = "NVIDIA H100 80GB HBM3:81559:0;NVIDIA A100-SXM4-40GB:40960:1:nopower"


@pytest.mark.parametrize(
    ("nvml_name", "memory_mib", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", 81559, "H100"),
        ("NVIDIA H100 PCIe", 81559, "H100"),
        ("NVIDIA H100 NVL", 95830, "H100"),
        ("NVIDIA H200", 143771, "H200"),
        ("NVIDIA GH200 480GB", 97871, "GH200"),
        ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
        ("A100-PCIE-40GB", 40960, "A100-40GB"),
        ("NVIDIA A100 80GB PCIe", 81920, "A100-80GB"),
        ("NVIDIA A100-SXM4-80GB", 0, "A100-80GB"),  # the name wins over a failed memory query
        ("NVIDIA A10G", 23028, "A10G"),
        ("NVIDIA A10", 23028, "A10"),
        ("NVIDIA A40", 46068, "A40"),
        ("NVIDIA L4", 23034, "L4"),
        ("NVIDIA L40", 46068, "L40"),
        ("NVIDIA L40S", 46068, "L40S"),
        ("Tesla T4", 15360, "T4"),
        ("NVIDIA GeForce RTX 4090", 24564, "RTX4090"),
        ("NVIDIA GeForce RTX 3090", 24576, "RTX3090"),
        ("NVIDIA B200", 183359, "B200"),
        ("Tesla V100-SXM2-16GB", 16160, "V100"),
        ("Tesla V100S-PCIE-32GB", 32510, "V100"),
        ("NVIDIA RTX A6000", 49140, "A6000"),
        ("NVIDIA RTX 6000 Ada Generation", 49140, "RTX6000-ADA"),
        ("NVIDIA H800", 81559, "H800"),  # unknown cards keep a usable short name
        ("NVIDIA GeForce GTX 1080 Ti", 11264, "GTX-1080-TI"),
    ],
)
def test_type_from_nvml_names(nvml_name: str, memory_mib: int, expected: str) -> None:
    assert type_from_nvml(nvml_name, memory_mib * MIB) == expected


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("a100", "A100-40GB"),
        ("A100", "A100-40GB"),
        ("a100-80gb", "A100-80GB"),
        ("A100 80GB", "A100-80GB"),
        ("h100", "H100"),
        (" H100 ", "H100"),
        ("rtx 4090", "RTX4090"),
        ("rtx-a6000", "A6000"),
        ("l40s", "L40S"),
        ("b200", "B200"),
        ("H999", None),
        ("", None),
    ],
)
def test_canonical_type(typed: str, expected: str | None) -> None:
    assert canonical_type(typed) == expected


def test_every_type_is_its_own_canonical_form() -> None:
    for gpu_type in GPU_TYPES:
        assert canonical_type(gpu_type) == gpu_type
        assert canonical_type(gpu_type.lower()) == gpu_type


def test_parse_simulated_spec() -> None:
    gpus = parse_simulated_spec("H100:2, a10g:1")
    assert [g.type for g in gpus] == ["H100", "H100", "A10G"]
    assert [g.index for g in gpus] == [0, 1, 2]
    assert len({g.uuid for g in gpus}) == 3
    assert all(g.simulated for g in gpus)
    assert gpus[0].memory_total == 80 * 2**30
    assert parse_simulated_spec("a100")[0].type == "A100-40GB"  # count defaults to 1


@pytest.mark.parametrize(
    ("spec", "words"),
    [("H999:1", "unknown"), ("H100:0", "at least 1"), ("H100:two", "whole number"), (" , ", "names no GPU")],
)
def test_parse_simulated_spec_rejects_bad_specs(spec: str, words: str) -> None:
    with pytest.raises(SimulatedInventoryError, match=words) as info:
        parse_simulated_spec(spec)
    assert isinstance(info.value, CellhopError)
    assert SIMULATED_ENV in str(info.value)  # the message shows a working example


def test_load_inventory_simulated_sources() -> None:
    from_env = load_inventory(environ={SIMULATED_ENV: "L4:3"})
    assert from_env.simulated and from_env.counts() == {"L4": 3}
    assert all(g.simulated for g in from_env.gpus)
    both = load_inventory("H100:1", environ={SIMULATED_ENV: "L4:3"})
    assert both.counts() == {"H100": 1}  # the traitlet wins over the environment
    blank = load_inventory("  ", environ={SIMULATED_ENV: "T4"})
    assert blank.counts() == {"T4": 1}
    assert "(simulated)" in both.describe()
    with pytest.raises(SimulatedInventoryError):
        load_inventory(environ={SIMULATED_ENV: "bogus:1"})


# ---------------------------------------------------------------- NVML through the fake library


def run_with_nvml(lib_dir: Path, script: str, **fake_env: str) -> tuple[dict, str]:
    """Run `script` in a fresh Python with lib_dir on LD_LIBRARY_PATH; its last stdout line is JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_NVML_", SIMULATED_ENV))}
    env["LD_LIBRARY_PATH"] = str(lib_dir)
    env.update(fake_env)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


INVENTORY_SCRIPT = """
    import ctypes, json
    import pynvml
    from cellhop.server_ext.nvml import read_nvml_inventory
    inventory = read_nvml_inventory().to_dict()
    lib = pynvml.nvmlLib
    inventory["fake_refcount"] = lib.fake_nvml_refcount() if lib is not None else None
    print(json.dumps(inventory))
"""


def test_nvml_two_devices(fake_nvml_dir: Path) -> None:
    inventory, stderr = run_with_nvml(fake_nvml_dir, INVENTORY_SCRIPT, FAKE_NVML_DEVICES=TWO_DEVICES)
    assert stderr == ""
    assert inventory["reason"] is None and inventory["simulated"] is False
    assert inventory["driver_version"] == "550.54.15"
    h100, a100 = inventory["gpus"]
    assert (h100["index"], h100["name"], h100["type"]) == (0, "NVIDIA H100 80GB HBM3", "H100")
    assert (a100["index"], a100["name"], a100["type"]) == (1, "NVIDIA A100-SXM4-40GB", "A100-40GB")
    assert h100["memory_total"] == 81559 * MIB and a100["memory_total"] == 40960 * MIB
    assert (h100["mig_mode"], a100["mig_mode"]) == (False, True)
    assert h100["uuid"] == "GPU-fa4e0000-0000-0000-0000-000000000000"
    assert a100["uuid"] == "GPU-fa4e0000-0000-0000-0000-000000000001"
    assert not h100["simulated"]
    assert inventory["fake_refcount"] == 0  # nvmlShutdown was called


def test_nvml_mig_not_supported_is_none(fake_nvml_dir: Path) -> None:
    inventory, _ = run_with_nvml(fake_nvml_dir, INVENTORY_SCRIPT, FAKE_NVML_DEVICES="Tesla T4:15360:na")
    assert [(g["type"], g["mig_mode"]) for g in inventory["gpus"]] == [("T4", None)]


def test_load_inventory_reads_nvml_when_nothing_simulated(fake_nvml_dir: Path) -> None:
    script = """
        import json
        from cellhop.server_ext.gpu_inventory import load_inventory
        print(json.dumps(load_inventory(environ={}).counts()))
    """
    counts, _ = run_with_nvml(fake_nvml_dir, script, FAKE_NVML_DEVICES=TWO_DEVICES)
    assert counts == {"H100": 1, "A100-40GB": 1}


@pytest.mark.parametrize(
    ("fake_env", "words"),
    [
        ({"FAKE_NVML_DEVICES": ""}, "NVML found no GPU devices"),
        ({"FAKE_NVML_MODE": "driver_not_loaded"}, "NVIDIA driver not loaded"),
        ({"FAKE_NVML_MODE": "no_permission"}, "no permission"),
        ({"FAKE_NVML_MODE": "lib_rm_version_mismatch"}, "different versions"),
    ],
)
def test_nvml_empty_inventory_reasons(fake_nvml_dir: Path, fake_env: dict[str, str], words: str) -> None:
    inventory, stderr = run_with_nvml(fake_nvml_dir, INVENTORY_SCRIPT, **fake_env)
    assert inventory["gpus"] == []
    assert words in inventory["reason"]
    assert stderr == ""
    assert inventory["fake_refcount"] == 0


def test_nvml_library_missing(tmp_path: Path) -> None:
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this host has a real libnvidia-ml, so a missing library cannot be shown")
    empty = tmp_path / "no_nvml"
    empty.mkdir()
    inventory, stderr = run_with_nvml(empty, INVENTORY_SCRIPT)
    assert inventory["gpus"] == []
    assert "libnvidia-ml.so.1" in inventory["reason"] and "no GPU is present" in inventory["reason"]
    assert stderr == ""  # no traceback, no log line


def test_import_does_not_touch_nvml(fake_nvml_dir: Path) -> None:
    script = """
        import json
        import pynvml
        import cellhop.server_ext.nvml as nvml
        session = nvml.NvmlSession()
        print(json.dumps({"loaded": pynvml.nvmlLib is not None, "open": session.is_open}))
    """
    state, _ = run_with_nvml(fake_nvml_dir, script, FAKE_NVML_DEVICES=TWO_DEVICES)
    assert state == {"loaded": False, "open": False}


def test_metrics_sampling(fake_nvml_dir: Path) -> None:
    script = """
        import json
        import pynvml
        from cellhop.server_ext.nvml import NvmlSession, read_nvml_inventory
        uuids = [g.uuid for g in read_nvml_inventory().gpus]
        with NvmlSession() as session:
            first = session.sample_gpu_metrics(uuids)
            second = session.sample_gpu_metrics(uuids + ["GPU-not-on-this-host"])
            open_refcount = pynvml.nvmlLib.fake_nvml_refcount()
        print(json.dumps({
            "first": first, "second": second, "open_refcount": open_refcount,
            "closed_refcount": pynvml.nvmlLib.fake_nvml_refcount(),
            "init_calls": pynvml.nvmlLib.fake_nvml_init_calls(),
        }))
    """
    out, stderr = run_with_nvml(fake_nvml_dir, script, FAKE_NVML_DEVICES=TWO_DEVICES)
    assert stderr == ""
    h100, a100 = out["first"]
    assert h100 == {
        "uuid": "GPU-fa4e0000-0000-0000-0000-000000000000",
        "utilization": 40,
        "memory_used": 2**30,
        "memory_total": 81559 * MIB,
        "power_w": 250.0,
        "temperature_c": 50,
        "processes": [{"pid": 4242, "used_memory": 2**30}],
    }
    assert "power_w" not in a100  # NOT_SUPPORTED on this device: left out
    assert (a100["utilization"], a100["temperature_c"], a100["processes"]) == (41, 51, [])
    assert a100["memory_used"] == 2 * 2**30 and a100["memory_total"] == 40960 * MIB
    assert out["second"][:2] == out["first"]
    assert out["second"][2] == {"uuid": "GPU-not-on-this-host"}
    assert out["open_refcount"] == 1 and out["closed_refcount"] == 0
    assert out["init_calls"] == 2  # one for the inventory, one for the whole session


def test_metrics_unavailable_without_driver(fake_nvml_dir: Path) -> None:
    script = """
        import json
        from cellhop.errors import CellhopError
        from cellhop.server_ext.nvml import GpuMetricsUnavailable, sample_gpu_metrics
        try:
            sample_gpu_metrics(["GPU-x"])
        except GpuMetricsUnavailable as exc:
            print(json.dumps({"message": str(exc), "cellhop_error": isinstance(exc, CellhopError)}))
    """
    out, stderr = run_with_nvml(fake_nvml_dir, script, FAKE_NVML_MODE="driver_not_loaded")
    assert out["cellhop_error"] is True
    assert "NVIDIA driver not loaded" in out["message"]
    assert stderr == ""

"""`cellhop doctor --gpu`: a `%%remote` cell on a GPU of this host, checked end to end.

On a host with GPUs: the cell allocates 1 GiB of CUDA memory (torch, else cupy) and keeps it while the
metric stream is watched for it, lists the GPUs the container sees (one: the GPU it was given, and only
that GPU's /dev/nvidiaN), and runs a matmul on the GPU, compared with the CPU's. The result is written
to benchmarks/results/doctor-gpu-<date>-<device>.json.

Without a GPU it says so, and checks what can be checked: NVML reading and metric sampling against the
fake libnvidia-ml.so.1 the tests build (tests/fake_nvml, in a source checkout, with gcc), and the same
cell on a simulated GPU (memory seen by the metric stream, the one pinned device, a matmul on the CPU).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
ALLOCATE = 1 << 30  # bytes the cell holds while the metric stream is watched

PROBE_CELL = '''%%remote --out doctor_probe
import os, time
import numpy as np
doctor_probe = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "device_files": sorted(n for n in os.listdir("/dev")  # links a claim has not filled yet do not count
                                       if n.startswith("nvidia") and n[6:].isdigit() and os.path.exists("/dev/" + n))}
a, b = np.random.default_rng(0).random((2, 1024, 1024), dtype=np.float32)
expected = a @ b
if {cuda}:
    try:
        import torch
        doctor_probe["library"] = "torch " + torch.__version__
        doctor_probe["cuda_devices"] = torch.cuda.device_count()
        doctor_probe["device_name"] = torch.cuda.get_device_name(0)
        doctor_held = torch.empty({size}, dtype=torch.uint8, device="cuda")
        got = (torch.from_numpy(a).cuda() @ torch.from_numpy(b).cuda()).cpu().numpy()
        torch.cuda.synchronize()
    except ImportError:
        import cupy
        doctor_probe["library"] = "cupy " + cupy.__version__
        doctor_probe["cuda_devices"] = cupy.cuda.runtime.getDeviceCount()
        doctor_probe["device_name"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        doctor_held = cupy.empty({size}, dtype=cupy.uint8)
        got = cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b))
        cupy.cuda.Device().synchronize()
else:
    doctor_probe["library"] = "numpy " + np.__version__ + " (CPU: no CUDA here)"
    doctor_held = np.ones({size}, dtype=np.uint8)  # touched: resident memory of the container
    got = a @ b
doctor_probe["matmul_max_error"] = float(np.abs(got - expected).max() / np.abs(expected).max())
'''


def _say(line: str) -> None:
    print(line, flush=True)


def _results_dir() -> Path:
    here = CHECKOUT / "benchmarks" / "results"
    return here if here.is_dir() else Path.cwd() / "benchmarks" / "results"


def _cell_checks(gpu_type: str, cuda: bool, simulated: bool) -> dict:
    """Run the probe cell on a `gpu_type` GPU in this process's own control plane; what it found."""
    from IPython.core.interactiveshell import InteractiveShell

    import cellhop

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "cellhop")
    control = cellhop.control_plane()
    samples: list[dict] = []
    subscription = control.subscribe(lambda e: samples.append(e) if e.get("type") == "metrics" else None,
                                     metrics_interval=0.5)
    found: dict = {"gpu_type": gpu_type, "simulated": simulated}
    try:
        shell.run_line_magic("gpu", gpu_type)
        started = time.monotonic()
        baseline = {g["uuid"]: g.get("memory_used", 0) for e in samples[-1:] for g in e["gpus"]}
        result = shell.run_cell(PROBE_CELL.replace("{cuda}", str(cuda)).replace("{size}", str(ALLOCATE)))
        if not result.success:
            found["error"] = repr(result.error_in_exec or result.error_before_exec)
            return found
        probe = shell.user_ns["doctor_probe"]
        found.update(probe, cell_seconds=round(time.monotonic() - started, 1))
        gpu = next((g for g in control.inventory().gpus if g.uuid == probe["visible"]), None)
        found["pinned"] = gpu is not None and "," not in probe["visible"]
        if gpu is not None:
            found["gpu"] = {"index": gpu.index, "uuid": gpu.uuid, "name": gpu.name, "minor": gpu.minor}
            own = [] if gpu.minor is None else [f"nvidia{gpu.minor}"]
            found["only_its_device_files"] = probe["device_files"] == own
            if cuda:
                found["only_its_device_files"] &= probe.get("cuda_devices") == 1
            seen = _wait_for_memory(samples, gpu.uuid, baseline.get(gpu.uuid, 0) + int(ALLOCATE * 0.9), timeout=60)
            found["metric_memory_used"] = seen
            found["metric_sees_memory"] = seen is not None
        shell.run_cell("%%remote --out doctor_freed\ndel doctor_held\ndoctor_freed = True")
    finally:
        subscription.close() if hasattr(subscription, "close") else None
        cellhop.control_plane().close()  # an embedded one stops its containers (the doctor's process ends next)
    return found


def _wait_for_memory(samples: list[dict], uuid: str, at_least: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in list(samples):
            for g in event["gpus"]:
                if g["uuid"] == uuid and g.get("memory_used", 0) >= at_least:
                    return g["memory_used"]
        time.sleep(0.2)
    return None


def _verdicts(found: dict, cuda: bool) -> list[tuple[bool, str]]:
    if "error" in found:
        return [(False, f"the %%remote cell failed: {found['error']}")]
    gib = ALLOCATE / 2**30
    held = "CUDA memory" if cuda else "memory (the simulated GPU's samples carry the container's own)"
    return [
        (found.get("pinned", False), f"the container was given one GPU: {found.get('visible')!r}"),
        (found.get("only_its_device_files", False),
         f"it sees only that GPU: /dev files {found.get('device_files')}"
         + (f", CUDA devices {found.get('cuda_devices')}" if cuda else "")),
        (found.get("metric_sees_memory", False),
         f"the metric stream saw the {gib:.0f} GiB of {held} the cell held"
         + (f" ({found['metric_memory_used'] / 2**30:.2f} GiB used)" if found.get("metric_memory_used") else "")),
        (found.get("matmul_max_error", 1.0) < 1e-2,
         f"a 1024x1024 matmul with {found.get('library')} matches the CPU's "
         f"(largest relative difference {found.get('matmul_max_error', float('nan')):.1e})"),
    ]


def _print_verdicts(verdicts: list[tuple[bool, str]]) -> int:
    for ok, text in verdicts:
        _say(f"[{'ok  ' if ok else 'FAIL'}] {text}")
    return 0 if all(ok for ok, _ in verdicts) else 1


def fake_nvml_checks() -> int:
    """NVML reading and metric sampling against the tests' fake libnvidia-ml.so.1, in a child process."""
    source = CHECKOUT / "tests" / "fake_nvml" / "fake_nvml.c"
    gcc = shutil.which("gcc")
    if not source.is_file() or gcc is None:
        _say("[--  ] the fake NVML is not checked: it needs a source checkout (tests/fake_nvml) and gcc")
        return 0
    with tempfile.TemporaryDirectory(prefix="cellhop-doctor-") as folder:
        subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", f"{folder}/libnvidia-ml.so.1", str(source)],
                       check=True, capture_output=True)
        code = ("import json\nfrom cellhop.server_ext.nvml import NvmlSession, read_nvml_inventory\n"
                "inv = read_nvml_inventory()\nwith NvmlSession() as s:\n"
                "    print(json.dumps({'gpus': [g.to_dict() for g in inv.gpus], "
                "'samples': s.sample_gpu_metrics([g.uuid for g in inv.gpus])}))")
        env = {**os.environ, "LD_LIBRARY_PATH": folder, "FAKE_NVML_DEVICES": "NVIDIA H100 80GB HBM3:81559:0"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    if done.returncode != 0:
        return _print_verdicts([(False, f"reading the fake NVML failed: {done.stderr.strip()[-500:]}")])
    data = json.loads(done.stdout.strip().splitlines()[-1])
    gpus, samples = data["gpus"], data["samples"]
    return _print_verdicts([
        (len(gpus) == 1 and gpus[0]["type"] == "H100" and gpus[0]["minor"] == 7,
         f"fake NVML: the inventory reads {[(g['type'], g['uuid'], 'minor %s' % g['minor']) for g in gpus]}"),
        (bool(samples) and samples[0].get("memory_used") == 2**30,
         f"fake NVML: a metric sample reads memory_used {samples[0].get('memory_used') if samples else None} "
         "(the fake's device 0 uses 1 GiB)"),
    ])


def run_gpu_checks() -> int:
    from .nvml import read_nvml_inventory

    for name in ("CELLHOP_CONTROL_URL", "CELLHOP_SIMULATED_GPUS"):  # this process's own control plane, on this host
        os.environ.pop(name, None)
    inv = read_nvml_inventory()
    _say("")
    if not inv.gpus:
        _say(f"cellhop doctor --gpu: this host has no GPU ({inv.reason}), so CUDA memory, a GPU's device files "
             "and a CUDA matmul cannot be checked here. Checking the rest: NVML against the tests' fake "
             "library, and a %%remote cell on a simulated H100.")
        status = fake_nvml_checks()
        os.environ["CELLHOP_SIMULATED_GPUS"] = "H100:1"
        found = _cell_checks("H100", cuda=False, simulated=True)
        return _print_verdicts(_verdicts(found, cuda=False)) or status
    gpu = inv.gpus[0]
    _say(f"cellhop doctor --gpu: a %%remote cell on {gpu.type} ({gpu.name}) ...")
    found = _cell_checks(gpu.type, cuda=True, simulated=False)
    status = _print_verdicts(_verdicts(found, cuda=True))
    found.update(date=date.today().isoformat(), driver=inv.driver_version, passed=status == 0)
    device = re.sub(r"[^a-z0-9]+", "-", (found.get("device_name") or gpu.name).lower()).strip("-")
    out = _results_dir() / f"doctor-gpu-{date.today().isoformat()}-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(found, indent=2) + "\n")
    _say(f"written to {out}")
    return status

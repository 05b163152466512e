"""The resource options of %gpu / %%remote, and c.Cellhop.default_cpus / default_memory, take effect in
the container (a real notebook kernel, real bubblewrap containers): the control group the container's
processes are in carries the CPU quota and memory limit asked for (or, on a host without groups, the
affinity mask / RLIMIT_DATA fallback the container itself can see), the thread-count variables follow
--cpus, `%gpu --timeout` interrupts a later cell with RemoteTimeout, and `%gpu --idle-timeout` stops the
notebook's container once it has idled that long. (`%%remote --timeout` and an OOM under --memory are
in test_faults.py.)"""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from kernel_fixtures import start_cellhop_kernel
from processes import wait_until

pytestmark = pytest.mark.timeout(180)

MiB = 2**20
PROBE = ("import json, os, resource\n"
         "print(json.dumps({'enforced': os.environ.get('CELLHOP_LIMITS_ENFORCEMENT', ''),"
         " 'omp': os.environ.get('OMP_NUM_THREADS'), 'affinity': len(os.sched_getaffinity(0)),"
         " 'rlimit_data': resource.getrlimit(resource.RLIMIT_DATA)[1],"
         " 'id': os.environ['CELLHOP_CONTAINER_ID']}))")


def probe(nb, options: str) -> dict:
    ran = nb.ok(f"%%remote --gpu none {options}\n{PROBE}".replace(" \n", "\n"))
    return json.loads(ran.stdout.strip().splitlines()[-1])


def group_value(nb, container_id: str, controller: str, name: str) -> int:
    """The value of `name` in the `controller` group that container's processes are in (seen from the host)."""
    pids = [pid for pid, cid in nb.container_processes().items() if cid == container_id]
    assert pids, f"no live process of container {container_id}"
    for line in Path(f"/proc/{pids[-1]}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            assert "cellhop-" in path, f"container {container_id} is in no cellhop group of {controller}: {path}"
            for root in (Path("/sys/fs/cgroup") / controllers, Path("/sys/fs/cgroup") / controller):
                if (root / path.lstrip("/") / name).exists():
                    return int((root / path.lstrip("/") / name).read_text().split()[0])
    raise AssertionError(f"no {controller} group with {name} for container {container_id}")


def assert_limits(nb, seen: dict, cpus: int, memory: int) -> None:
    assert seen["omp"] == str(cpus), seen
    if "cpu: cgroup v1" in seen["enforced"]:
        assert group_value(nb, seen["id"], "cpu", "cpu.cfs_quota_us") == cpus * group_value(
            nb, seen["id"], "cpu", "cpu.cfs_period_us")
    else:
        assert "cpu: CPU affinity" in seen["enforced"] or "cpu: cgroup v2" in seen["enforced"], seen
        if "affinity" in seen["enforced"]:
            assert seen["affinity"] == cpus, seen
    if "memory: cgroup v1" in seen["enforced"]:
        assert group_value(nb, seen["id"], "memory", "memory.limit_in_bytes") == memory
    elif "memory: RLIMIT_DATA" in seen["enforced"]:
        assert seen["rlimit_data"] == memory, seen


def test_cpus_and_memory_options_reach_the_container():
    with start_cellhop_kernel() as nb:
        unlimited = probe(nb, "")
        assert unlimited["rlimit_data"] == resource.RLIM_INFINITY or "cgroup" in unlimited["enforced"]
        seen = probe(nb, "--cpus 1 --memory 256M")
        assert seen["id"] != unlimited["id"]  # other limits: another container
        assert_limits(nb, seen, cpus=1, memory=256 * MiB)

        nb.ok("%gpu none --timeout 1")  # the notebook's default for later cells
        ran = nb.run("%%remote\nimport time\ntime.sleep(30)", timeout=60)
        assert ran.status == "error" and ran.ename == "RemoteTimeout", ran

        nb.ok("%gpu none --timeout 600 --idle-timeout 2")
        cid = probe(nb, "")["id"]
        wait_until(lambda: cid not in nb.container_processes().values(), timeout=60,
                   what=f"container {cid} to stop after idling 2 s (%gpu --idle-timeout 2)")


def test_default_cpus_and_memory_settings_apply_to_a_container_started_without_limits():
    with start_cellhop_kernel(extra_arguments=("--Cellhop.default_cpus=1", "--Cellhop.default_memory=300M")) as nb:
        seen = probe(nb, "")
        assert_limits(nb, seen, cpus=1, memory=300 * MiB)

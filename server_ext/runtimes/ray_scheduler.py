"""The Ray runtime's GPUs: the cluster's inventory and Ray's scheduler behind cellhop's Scheduler interface.

- Inventory: the `accelerator_type:<TYPE>` and `GPU` resources of the cluster's alive nodes, read
  through NVML on each node where there is one; marked simulated where a node advertises GPUs NVML
  does not see. Each Gpu carries its `node`.
- Scheduling: a request becomes a placement group (one bundle: GPUs, a sliver of the accelerator
  type, a CPU; STRICT_PACK, so it must fit on one node), its fallback types tried in order; one that
  does not fit waits in Ray's queue, its position among cellhop's pending requests shown, and the
  first of its types placed wins. It implements scheduling.GpuScheduler, as scheduler.Scheduler
  does, so the container manager does not know which runtime it drives.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import CellhopError, QueueTimeout
from ...gpu_request import ANY, GpuRequest, feasible_choices, largest_per_node
from ...gpu_types import canonical_type
from ...inventory import Gpu, Inventory, simulated_gpu
from ..scheduling import Allocation, GpuScheduler

log = logging.getLogger("cellhop")

ACCELERATOR_PREFIX = "accelerator_type:"
ACCELERATOR_SHARE = 0.001  # Ray's convention: a sliver of the type resource pins the node type
POLL_INTERVAL = 0.1


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise CellhopError("c.Cellhop.runtime = 'ray' needs Ray: pip install 'cellhop[ray]'") from exc
    return ray


# -- inventory ----------------------------------------------------------------------------------
def cluster_inventory(probe_nvml: bool = True) -> Inventory:
    """The GPUs of the connected cluster's alive nodes, one Gpu per Ray GPU, with its node."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted((n for n in ray.nodes() if n.get("Alive")), key=lambda n: n["NodeManagerAddress"])
    probes = {}
    if probe_nvml:
        from .ray_actor import probe_node_gpus

        task = ray.remote(num_cpus=0)(probe_node_gpus)
        for n in nodes:
            if n["Resources"].get("GPU"):
                probes[n["NodeID"]] = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                    n["NodeID"], soft=False)).remote()
    gpus: list[Gpu] = []
    simulated = False
    for n in nodes:
        res = n["Resources"]
        count = int(res.get("GPU", 0))
        if not count:
            continue
        types = [canonical_type(k[len(ACCELERATOR_PREFIX):]) or k[len(ACCELERATOR_PREFIX):]
                 for k in res if k.startswith(ACCELERATOR_PREFIX)]
        ip = n["NodeManagerAddress"]
        real = []
        if n["NodeID"] in probes:
            try:
                real = Inventory.from_dict(ray.get(probes[n["NodeID"]], timeout=60)).gpus
            except Exception as exc:  # a node that cannot answer keeps its advertised GPUs
                log.warning("cellhop: reading NVML on Ray node %s failed: %s", ip, exc)
        if real:
            gpus += [dataclasses.replace(g, node=ip) for g in real[:count]]
            continue
        gpu_type = types[0] if types else "GPU"
        simulated = True  # Ray advertises GPUs that NVML does not show: custom resources only
        for i in range(count):
            gpus.append(simulated_gpu(gpu_type, i, f"GPU-ray-simulated-{gpu_type.lower()}-{ip}-{i}",
                                      name=f"simulated {gpu_type} (Ray resource)", node=ip))
    reason = None if gpus else f"the Ray cluster ({len(nodes)} node(s)) advertises no GPU"
    return Inventory(gpus=tuple(gpus), simulated=simulated, reason=reason)


# -- scheduling: Ray places and queues --------------------------------------------------------
@dataclass
class RayAllocation(Allocation):
    """A placement group holding one container's resources; `assigned` are the GPUs Ray gave it."""

    gpu_type_wanted: str | None = None
    count: int = 0
    pg: object = None
    node: str | None = None
    assigned: tuple = ()
    actor: object = None  # set by the runtime; removed with the placement group

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self.assigned

    @property
    def gpu_type(self) -> str | None:
        return self.gpu_type_wanted

    def release(self) -> None:
        ray = _ray()
        from ray.util.placement_group import remove_placement_group

        if self.actor is not None:
            try:
                ray.get(self.actor.remove.remote(), timeout=10)
            except Exception:  # dead already (node lost): nothing left there to remove
                pass
            try:
                ray.kill(self.actor)
            except Exception:
                pass
            self.actor = None
        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:
                pass
            self.pg = None


def _pg_name(want: tuple[str | None, int]) -> str:
    return f"cellhop-{time.time_ns():020d}-{os.getpid()}-{want[0] or 'cpu'}-{want[1]}"


def _pg_type(name: str) -> str | None:
    parts = name.split("-")
    return None if len(parts) < 5 or parts[0] != "cellhop" or parts[3] == "cpu" else "-".join(parts[3:-1])


class RayScheduler(GpuScheduler):
    """The scheduler interface (scheduling.GpuScheduler), with Ray doing the placing and queueing."""

    def __init__(self, inventory: Inventory, poll_interval: float = POLL_INTERVAL):
        self.inventory = inventory
        self.poll_interval = poll_interval
        self._live: dict[int, tuple[RayAllocation, dict]] = {}
        self._lock = threading.Lock()

    def _wants(self, request: GpuRequest) -> list[tuple[str | None, int]]:
        wants: list[tuple[str | None, int]] = []
        # GpuRequestError when none could fit on one node (a placement group's bundle is STRICT_PACK)
        per_node = largest_per_node(self.inventory)
        for choice in feasible_choices(request, self.inventory):
            if choice.type == ANY:
                wants += [(t, choice.count) for t, n in per_node.items() if n >= choice.count]
            else:
                wants.append((choice.type, choice.count))
        return list(dict.fromkeys(wants)) or [(None, 0)]

    @staticmethod
    def _bundle(want: tuple[str | None, int]) -> dict:
        gpu_type, count = want
        bundle = {"CPU": 1.0}
        if count:
            bundle["GPU"] = float(count)
            bundle[ACCELERATOR_PREFIX + gpu_type] = ACCELERATOR_SHARE
        return bundle

    @staticmethod
    def _fits_now(want, available: dict) -> bool:
        bundle = RayScheduler._bundle(want)
        return any(all(res.get(k, 0.0) >= v for k, v in bundle.items()) for res in available.values())

    def acquire(self, request: GpuRequest, holder: dict, timeout: float | None = None,
                on_position: Callable[[int], None] | None = None,
                cancelled: threading.Event | None = None) -> RayAllocation:
        """Place `request`'s first type that fits now; else wait in Ray's queue on all of them in order."""
        ray = _ray()
        from ray._private.state import available_resources_per_node
        from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

        wants = self._wants(request)
        start = time.monotonic()
        pending: dict[tuple, object] = {}
        try:
            try:
                available = available_resources_per_node()
            except Exception:  # a ray:// client cannot ask per node: the cluster's totals approximate it
                available = {"cluster": ray.available_resources()}
            for want in wants:  # ordered fallback: the first type with room now
                if self._fits_now(want, available):
                    pg = placement_group([self._bundle(want)], strategy="STRICT_PACK", name=_pg_name(want))
                    if pg.wait(5):
                        return self._granted(request, want, pg, holder, start)
                    pending[want] = pg  # taken meanwhile: it waits in Ray's queue like the rest
            for want in wants:
                if want not in pending:
                    pending[want] = placement_group([self._bundle(want)], strategy="STRICT_PACK",
                                                    name=_pg_name(want))
            last = None
            while True:
                for want in wants:  # in the request's order: the first placed wins
                    if placement_group_table(pending[want]).get("state") == "CREATED":
                        pg = pending.pop(want)
                        return self._granted(request, want, pg, holder, start)
                position = self._position(pending, placement_group_table())
                if position != last and on_position is not None:
                    on_position(position)
                last = position
                waited = time.monotonic() - start
                if timeout is not None and waited >= timeout:
                    raise QueueTimeout(
                        f"no GPU for {request} was free on the Ray cluster within {waited:.0f} s "
                        f"(waiting for resources: {position} cellhop request(s) ahead; the cluster has "
                        f"{self.inventory.describe()}). Stop a container that holds one, or ask for "
                        "another type or a longer timeout.")
                if cancelled is not None and cancelled.is_set():
                    raise QueueTimeout(f"the request for {request} was cancelled while queued")
                time.sleep(self.poll_interval)
        finally:
            for pg in pending.values():
                try:
                    remove_placement_group(pg)
                except Exception:
                    pass

    @staticmethod
    def _position(pending: dict, table: dict) -> int:
        """How many pending cellhop requests (of any driver) created before ours want one of our types."""
        ours = {getattr(pg, "id", None) and pg.id.hex() for pg in pending.values()}
        types = {w[0] for w in pending}
        first = min((t["name"] for t in table.values() if t["placement_group_id"] in ours), default="")
        ahead = set()
        for t in table.values():
            name = t.get("name") or ""
            if (t.get("state") == "PENDING" and name.startswith("cellhop-") and name < first
                    and t["placement_group_id"] not in ours and _pg_type(name) in types):
                ahead.add(name.split("-")[1])
        return len(ahead)

    def _granted(self, request, want, pg, holder, start) -> RayAllocation:
        from ray.util.placement_group import placement_group_table

        node_id = placement_group_table(pg).get("bundles_to_node_id", {}).get(0)
        alloc = RayAllocation(request, waited=time.monotonic() - start, gpu_type_wanted=want[0],
                              count=want[1], pg=pg, node=node_id)
        with self._lock:
            self._live[id(alloc)] = (alloc, holder)
        return alloc

    def release(self, allocation: Allocation) -> None:
        with self._lock:
            self._live.pop(id(allocation), None)
        allocation.release()

    def queued_types(self) -> set[str]:
        return set()

    def holders(self) -> dict[str, dict | None]:
        held = {}
        with self._lock:
            for alloc, holder in self._live.values():
                for g in alloc.gpus:
                    held[g.uuid] = {k: holder[k] for k in ("owner", "container") if k in holder}
        return {g.uuid: held.get(g.uuid) for g in self.inventory.gpus}

"""The Ray runtime: containers are Ray actors on a cluster's nodes (`c.Cellhop.runtime = "ray"`).

What differs from the local runtime, and nothing else:
- GPUs: the inventory is the cluster's (`accelerator_type:<TYPE>` and `GPU` resources of its
  nodes, read through NVML on each node where there is one; marked simulated where a node
  advertises GPUs NVML does not see). Ray places and queues: a request becomes a placement
  group (one bundle: GPUs, the accelerator type, a CPU), its fallback types tried in order;
  one that does not fit waits in Ray's queue, its position among cellhop's pending requests
  shown, and the first of its types placed wins.
- The container: a `ContainerActor` (ray_actor.py) in that placement group runs the kernel with
  the local runtime on its node and returns its connection info. Connections go over TCP to
  the node with CurveZMQ; keys as curve.py says (the kernel admits only the client key pair the
  control plane derives and hands its clients, as it does the HMAC key).
- Images: a built image's steps become the actor's Ray runtime_env (pip packages, env vars,
  working_dir, py_modules). Volumes need storage every node sees (`ray_shared_volume_path`).
- An actor that dies (node lost, killed) ends the container with the same ExitStatus and
  ContainerDied errors as a dead local container.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...kernel.curve_tunnel import CLIENT_PUBLIC, CLIENT_SECRET
from ..container import Container, ExitStatus
from ..errors import CellhopError, QueueTimeout
from ..gpu_request import ANY, GpuRequest, feasible_choices, largest_per_node
from ..gpu_types import canonical_type
from ..inventory import _SIMULATED_MEMORY_GIB, Gpu, Inventory
from ..scheduler import Allocation
from . import curve
from .base import ContainerRuntime

log = logging.getLogger("cellhop")

ACCELERATOR_PREFIX = "accelerator_type:"
ACCELERATOR_SHARE = 0.001  # Ray's convention: a sliver of the type resource pins the node type
POLL_INTERVAL = 0.1
CALL_TIMEOUT = 30.0


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
            gpus.append(Gpu(index=i, uuid=f"GPU-ray-simulated-{gpu_type.lower()}-{ip}-{i}",
                            name=f"simulated {gpu_type} (Ray resource)", type=gpu_type,
                            memory_total=_SIMULATED_MEMORY_GIB.get(gpu_type, 16) * 2**30, mig_mode=False,
                            simulated=True, node=ip))
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


class RayScheduler:
    """The scheduler interface of scheduler.Scheduler, with Ray doing the placing and queueing."""

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


# -- the runtime --------------------------------------------------------------------------------
@dataclass
class RayHandle:
    actor: object
    exit_ref: object
    node_ip: str
    node_id: str
    control_secret: str = field(repr=False, default="")
    kernel_public: str = ""
    node_pid: int | None = None  # the kernel's pid on its node (not a pid of this host)
    status: ExitStatus | None = None
    last_log: str = ""
    death_check: threading.Thread | None = field(default=None, repr=False)  # asks whether its node died


NODE_DEATH_WAIT = 8.0  # seconds an actor's death waits for Ray to say whether its node went with it


def _node_lost(ray, node_ip: str, wait: float = NODE_DEATH_WAIT) -> bool:
    """Whether the Ray node at `node_ip` is dead, or dies within `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        if not any(n.get("Alive") and n.get("NodeManagerAddress") == node_ip for n in ray.nodes()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)


_REQUIREMENT_OPTIONS_WITH_VALUE = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f",
                                   "--trusted-host", "--constraint", "-c")
_REQUIREMENT_FLAGS = ("--pre", "--no-index", "--prefer-binary", "--only-binary", "--no-binary")


def requirements_file(path: Path, _seen: frozenset = frozenset()) -> tuple[list[str], list[str]]:
    """(requirement lines, pip options) of a requirements file as pip reads it: comments and blank lines
    skipped, continuation lines joined, `-r`/`--requirement` files followed (relative to the file),
    index and link options kept apart (they become Ray's pip_install_options, not package names)."""
    import shlex

    path = Path(path).resolve()
    if path in _seen:
        return [], []
    try:
        text = path.read_text()
    except OSError as exc:
        raise CellhopError(f"cannot read requirements file {path}: {exc}") from None
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    packages: list[str] = []
    options: list[str] = []
    for line in logical:
        line = line.strip()
        if line.startswith("#"):
            continue
        if " #" in line or "\t#" in line:  # an inline comment (pip: whitespace, then #)
            line = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not line:
            continue
        if not line.startswith("-"):
            packages.append(" ".join(line.split()))
            continue
        words = shlex.split(line)
        flag, value = words[0], " ".join(words[1:]) or None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif flag[:2] in ("-r", "-c", "-i", "-f", "-e") and len(flag) > 2:
            flag, value = flag[:2], flag[2:]
        if flag in ("-r", "--requirement"):
            more, more_options = requirements_file(path.parent / value, _seen | {path})
            packages += more
            options += more_options
        elif flag in ("-e", "--editable"):
            packages.append(value)
        elif flag in ("-c", "--constraint"):
            options += ["--constraint", str(path.parent / value)]
        elif flag in _REQUIREMENT_OPTIONS_WITH_VALUE:
            options += [flag, value]
        elif flag in _REQUIREMENT_FLAGS:
            options += [flag] + ([value] if value else [])
        else:
            raise CellhopError(f"requirements file {path}: option {flag!r} cannot become a Ray runtime_env "
                               "(index, link, constraint and -r options can)")
    return packages, options


class RayRuntime(ContainerRuntime):
    """Containers as Ray actors placed on a cluster's nodes."""

    name = "ray"

    def __init__(self, address: str = "auto", sandbox: str = "auto", images_root: Path | None = None,
                 state_dir: Path | None = None, shared_volume_path: str = "", start_timeout: float = 60.0, probe_nvml: bool = True):
        ray = _ray()
        self.address = address or "auto"
        self.sandbox = sandbox
        self.images_root = images_root
        self.state_dir = state_dir  # hidden from every container on every node (a shared one holds secrets)
        self.shared_volume_path = shared_volume_path
        self.start_timeout = start_timeout
        self._probe_nvml = probe_nvml
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                ray.init(address=self.address, namespace="cellhop", logging_level=logging.WARNING,
                         log_to_driver=False, include_dashboard=False)
            except Exception as exc:
                raise CellhopError(f"cannot connect to the Ray cluster at {self.address!r}: {exc}. "
                                   "Set c.Cellhop.ray_address to the head's address (host:port or "
                                   "ray://host:10001)") from exc
        from .ray_actor import ContainerActor

        self._actor_class = ray.remote(ContainerActor)
        self._nodes = len([n for n in ray.nodes() if n.get("Alive")])

    # -- what the manager asks of a runtime beyond the lifecycle -----------------------------------
    def load_inventory(self) -> Inventory:
        self.inventory = cluster_inventory(self._probe_nvml)
        return self.inventory

    def make_scheduler(self, inventory: Inventory, root: Path):
        self.inventory = inventory
        return RayScheduler(inventory)

    def describe(self) -> str:
        sandbox = "sandboxed with bubblewrap where the node has it" if self.sandbox != "none" else "unsandboxed"
        return f"ray cluster at {self.address} ({self._nodes} node(s)), TCP with CurveZMQ, {sandbox}"

    # -- lifecycle ----------------------------------------------------------------------------------
    def launch(self, container: Container) -> None:
        ray = _ray()
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        alloc: RayAllocation = container.allocation
        spec = container.spec
        handle: RayHandle | None = container.handle
        mounts = self._mounts(container)
        runtime_env, workdir_dest = self._runtime_env(spec.image)
        if handle is None:
            control_public, control_secret = curve.keypair()
            options = dict(num_cpus=1, num_gpus=alloc.count, max_restarts=0, max_task_retries=0,
                           max_concurrency=8, scheduling_strategy=PlacementGroupSchedulingStrategy(alloc.pg, 0))
            if alloc.count:
                options["resources"] = {ACCELERATOR_PREFIX + alloc.gpu_type_wanted: ACCELERATOR_SHARE}
            if runtime_env:
                options["runtime_env"] = runtime_env
            actor = self._actor_class.options(**options).remote(container.id, control_public, self.sandbox,
                                                                 str(self.state_dir) if self.state_dir else None)
            alloc.actor = actor
            try:  # waits for the actor, its runtime_env included
                where = ray.get(actor.public_key.remote(), timeout=self.start_timeout)
            except ray.exceptions.GetTimeoutError:
                raise CellhopError(f"the Ray actor of container {container.id} did not start within "
                                   f"{self.start_timeout:.0f} s (runtime_env setup or worker start); "
                                   "raise c.Cellhop.start_timeout") from None
            handle = RayHandle(actor, None, where["node_ip"], where["node_id"], control_secret, where["public"])
        sealed = curve.seal(container.secret_env, handle.control_secret, handle.kernel_public, container.id)
        node_spec = dataclasses.replace(spec, image=None, workdir=None, python=None)
        keep = container.connection_info  # a restart keeps the ports and keys its clients hold ...
        keep = {k: v for k, v in keep.items()  # ... the HMAC key and the client pair stay here
                if k not in ("key", CLIENT_PUBLIC, CLIENT_SECRET)} if keep else None
        started = ray.get(handle.actor.start.remote(
            node_spec, alloc.gpu_type_wanted, self._simulated(handle.node_ip), sealed, mounts, keep,
            workdir_dest), timeout=self.start_timeout)
        handle.exit_ref = handle.actor.wait_exit.remote()
        handle.node_pid, handle.status, handle.death_check = started["pid"], None, None
        container.handle = handle
        container.node = handle.node_ip
        container.sandboxed = started["sandboxed"]
        alloc.assigned = self._assigned(handle.node_ip, started["gpu_ids"], alloc.gpu_type_wanted)
        client_public, client_secret = curve.client_keypair(handle.control_secret, handle.kernel_public,
                                                            container.id)
        container.connection_info = {  # the node's kernel admits this client pair alone (its ZAP)
            **started["connection_info"],
            "key": curve.hmac_key(handle.control_secret, handle.kernel_public, container.id),
            CLIENT_PUBLIC: client_public, CLIENT_SECRET: client_secret,
        }

    def _simulated(self, node_ip: str) -> bool:
        return any(g.simulated for g in self._inventory_gpus() if g.node == node_ip)

    def _inventory_gpus(self):
        return getattr(self, "inventory", Inventory()).gpus

    def _assigned(self, node_ip: str, ids: list[str], gpu_type: str | None) -> tuple[Gpu, ...]:
        on_node = [g for g in self._inventory_gpus() if g.node == node_ip]
        out = []
        for i in ids:
            match = next((g for g in on_node if str(g.index) == i or g.uuid == i), None)
            out.append(match or Gpu(index=int(i) if i.isdigit() else 0, uuid=f"ray-{node_ip}-{i}",
                                    name=gpu_type or "GPU", type=gpu_type or "", memory_total=0, node=node_ip))
        return tuple(out)

    def _mounts(self, container: Container) -> list:
        if not container.mounts:
            return []
        shared = self.shared_volume_path
        paths = ", ".join(p for _, p, _ in container.mounts)
        if not shared:
            raise CellhopError(
                f"mounting volumes ({paths}) on the Ray runtime needs storage every node sees: set "
                "c.Cellhop.ray_shared_volume_path to a folder mounted at the same path on every node "
                "(NFS, a cluster file system) and keep cellhop's volumes there (c.Cellhop.state_dir); "
                "cellhop never mounts a node-local folder in its place")
        outside = [str(src) for src, _, _ in container.mounts if not Path(src).resolve().is_relative_to(
            Path(shared).resolve())]
        if outside:
            raise CellhopError(
                f"volume folder(s) {', '.join(outside)} are not under c.Cellhop.ray_shared_volume_path "
                f"({shared}), so other Ray nodes cannot see them; put cellhop's state_dir under it")
        return [(str(src), dest, ro) for src, dest, ro in container.mounts]

    def _runtime_env(self, image: str | None) -> tuple[dict, str | None]:
        """A built image as a Ray runtime_env (pip, env_vars, working_dir, py_modules)."""
        if not image:
            return {}, None
        from ..images.store import ImageStore

        if self.images_root is None:
            raise CellhopError("this control plane has no image store (c.Cellhop.state_dir)")
        rec = ImageStore(self.images_root).image(image)
        spec = rec.get("spec") or {}
        base = spec.get("base", {})
        label = rec.get("name") or rec["key"][:12]
        if base.get("kind") != "current":
            raise CellhopError(f"image {label}: on the Ray runtime an image starts from the cluster's own "
                               "Python (cellhop.Image.current()); Image.python(...) needs the local runtime")
        env: dict = {}
        pip: list[str] = []
        pip_options: list[str] = []
        env_vars: dict[str, str] = {}
        workdir_dest = None
        for step in spec.get("steps", []):
            op = step.get("op")
            if op == "pip_install":
                pip += step["packages"]
                for opt, flag in (("index_url", "--index-url"), ("extra_index_url", "--extra-index-url"),
                                  ("find_links", "--find-links")):
                    if step.get(opt):
                        pip_options += [flag, step[opt]]
                if step.get("pre"):
                    pip_options.append("--pre")
            elif op == "requirements":
                packages, options = requirements_file(Path(step["path"]))
                pip += packages
                pip_options += options
            elif op == "env":
                env_vars.update(step["vars"])
            elif op == "add_local_dir":
                if workdir_dest is not None:
                    raise CellhopError(f"image {label}: the Ray runtime ships one add_local_dir (as Ray's "
                                       "working_dir); merge the folders into one")
                env["working_dir"] = step["src"]
                workdir_dest = step["dest"]
            elif op == "add_local_python_source":
                env.setdefault("py_modules", []).extend(s["path"] for s in step["sources"])
            else:
                raise CellhopError(f"image {label}: step {op!r} cannot become a Ray runtime_env (only "
                                   "pip_install, requirements, env, add_local_dir and add_local_python_source "
                                   "can); use the local runtime for it")
        if pip:
            env["pip"] = {"packages": pip, "pip_check": False}
            if pip_options:
                env["pip"]["pip_install_options"] = pip_options
        if env_vars:
            env["env_vars"] = env_vars
        return env, workdir_dest

    def poll(self, container: Container) -> ExitStatus | None:
        handle: RayHandle | None = container.handle
        if handle is None or handle.exit_ref is None:
            return None
        if handle.status is not None:
            return handle.status
        ray = _ray()
        ready, _ = ray.wait([handle.exit_ref], timeout=0)
        if not ready:
            return None
        if handle.death_check is not None:  # still asking the cluster about its node (below)
            return handle.status
        try:
            out = ray.get(handle.exit_ref)
            handle.status = ExitStatus(code=out["code"], signal=out["signal"], oom=out["oom"])
        except ray.exceptions.RayActorError as exc:
            status = self._actor_death(handle, exc, lambda: _node_lost(ray, handle.node_ip, wait=0))
            if status.reason and "Ray node" in status.reason or status.oom:
                handle.status = status
            else:
                self._check_node_later(ray, handle, exc)
        return handle.status

    def _check_node_later(self, ray, handle: RayHandle, exc: BaseException) -> None:
        """Ray may report an actor's death before it marks the node dead: ask the cluster for a while,
        on a thread of its own (poll() runs on the monitor thread, which watches every container)."""

        def check():
            try:
                handle.status = self._actor_death(handle, exc, lambda: _node_lost(ray, handle.node_ip))
            except Exception:  # the cluster cannot say: the actor died, that is all we know
                handle.status = self._actor_death(handle, exc)

        handle.death_check = threading.Thread(target=check, name="cellhop-ray-node-check", daemon=True)
        handle.death_check.start()

    @staticmethod
    def _actor_death(handle: RayHandle, exc: BaseException, node_lost=lambda: False) -> ExitStatus:
        text = str(exc)
        lowered = text.lower()
        if "outofmemory" in lowered.replace(" ", "") or "out of memory" in lowered:
            return ExitStatus(oom=True, signal=signal.SIGKILL)
        said_node = "node" in lowered and ("died" in lowered or "dead" in lowered or "lost" in lowered
                                           or "terminated" in lowered)
        # Ray may report the actor's death before it marks the node dead: ask the cluster as well.
        if said_node or node_lost():
            return ExitStatus(signal=signal.SIGKILL, reason=f"its Ray node {handle.node_ip} was lost")
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
        return ExitStatus(signal=signal.SIGKILL, reason=f"its Ray actor on {handle.node_ip} died: {first[:200]}")

    def _signal(self, container: Container, name: str) -> None:
        handle: RayHandle | None = container.handle
        if handle is None or handle.status is not None:
            return
        ray = _ray()
        try:
            ray.get(handle.actor.signal.remote(name), timeout=CALL_TIMEOUT)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass  # its death is what poll() reports

    def interrupt(self, container: Container) -> None:
        self._signal(container, "SIGINT")

    def terminate(self, container: Container) -> None:
        self._signal(container, "SIGTERM")

    def kill(self, container: Container) -> None:
        self._signal(container, "SIGKILL")
        handle: RayHandle | None = container.handle
        if handle is not None and handle.exit_ref is not None:
            ray = _ray()
            ray.wait([handle.exit_ref], timeout=5)

    def cleanup(self, container: Container) -> None:
        handle: RayHandle | None = container.handle
        if handle is None:
            return
        handle.last_log = self.read_log(container)
        ray = _ray()
        try:
            ray.get(handle.actor.cleanup.remote(), timeout=CALL_TIMEOUT)
        except Exception:
            pass  # the actor is gone; its placement group's removal frees the rest

    def read_log(self, container: Container) -> str:
        handle: RayHandle | None = container.handle
        if handle is None:
            return ""
        ray = _ray()
        try:
            handle.last_log = ray.get(handle.actor.read_log.remote(), timeout=5) or handle.last_log
        except Exception:
            pass
        return handle.last_log

    def close(self) -> None:
        if self._owns_ray:
            _ray().shutdown()

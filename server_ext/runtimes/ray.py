"""The Ray runtime: containers are Ray actors on a cluster's nodes (`c.Cellhop.runtime = "ray"`,
`c.RayRuntime.address`, `c.RayRuntime.shared_volume_path`).

What differs from the local runtime, and nothing else:
- GPUs: the inventory is the cluster's (`accelerator_type:<TYPE>` and `GPU` resources of its
  nodes, read through NVML on each node where there is one; marked simulated where a node
  advertises GPUs NVML does not see). Ray places and queues: a request becomes a placement
  group, its fallback types tried in order (ray_scheduler.py).
- The container: a `ContainerActor` (ray_actor.py) in that placement group runs the kernel with
  the local runtime on its node and returns its connection info. Connections go over TCP to
  the node with CurveZMQ; keys as curve.py says (the kernel admits only the client key pair the
  control plane derives and hands its clients, as it does the HMAC key).
- Ports (the proxy's `connect_port`): through the container actor's relay on its node
  (port_tunnel.py), CurveZMQ admitting only a client key derived for the relay, never an open port.
- Images: a built image's steps become the actor's Ray runtime_env (pip packages, env vars,
  working_dir, py_modules; images/ray_env.py). Volumes need storage every node sees (`shared_volume_path`).
- An actor that dies (node lost, killed) ends the container with the same ExitStatus and
  ContainerDied errors as a dead local container.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from traitlets import Unicode

from ...container import ExitStatus
from ...errors import CellhopError
from ...inventory import Gpu, Inventory, assigned_gpu
from ...wire import CLIENT_PUBLIC, CLIENT_SECRET, plain_info
from ..container_record import Container
from ..images.ray_env import ray_runtime_env
from . import curve
from .base import ContainerRuntime, Launched
from .ray_driver_messages import keep_driver_messages_out_of_cells
from .ray_scheduler import (ACCELERATOR_PREFIX, ACCELERATOR_SHARE, RayAllocation, RayScheduler, _ray,
                            cluster_inventory)

log = logging.getLogger("cellhop")
CALL_TIMEOUT = 30.0


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


class RayRuntime(ContainerRuntime):
    """Containers as Ray actors placed on a cluster's nodes."""

    name = "ray"

    address = Unicode(
        "auto", help="The Ray cluster: 'host:port' of its head, a 'ray://host:10001' client address, or 'auto' "
        "(RAY_ADDRESS, else the cluster started on this host).",
    ).tag(config=True)
    shared_volume_path = Unicode(
        "", help="A folder mounted at the same path on every node (NFS, a cluster file system) that holds "
        "cellhop's volumes (put c.Cellhop.state_dir under it). Empty: mounting a volume on Ray is an error, "
        "never a node-local folder.",
    ).tag(config=True)
    deprecated_aliases = {"ray_address": "address", "ray_shared_volume_path": "shared_volume_path"}

    def __init__(self, probe_nvml: bool = True, **kwargs):
        # kwargs: the base's (sandbox, images_root, state_dir: hidden from every container on every node, a
        # shared one holds secrets; start_timeout) and traits; no files of its own on this host
        super().__init__(**kwargs)
        ray = _ray()
        self.address = self.address or "auto"
        self._probe_nvml = probe_nvml
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            keep_driver_messages_out_of_cells()  # before the listener thread starts printing
            try:
                ray.init(address=self.address, namespace="cellhop", logging_level=logging.WARNING,
                         log_to_driver=False, include_dashboard=False)
            except Exception as exc:
                raise CellhopError(f"cannot connect to the Ray cluster at {self.address!r}: {exc}. "
                                   "Set c.RayRuntime.address to the head's address (host:port or "
                                   "ray://host:10001)") from exc
        from .ray_actor import ContainerActor

        self._actor_class = ray.remote(ContainerActor)
        self._relay_zmq = None  # the zmq context of proxied connections (connect_port), made on first use
        self._lock_relay_context = threading.Lock()
        self._relay_closing = False
        self._nodes = len([n for n in ray.nodes() if n.get("Alive")])

    # -- what the manager asks of a runtime beyond the lifecycle -----------------------------------
    def load_inventory(self) -> Inventory:
        self.inventory = cluster_inventory(self._probe_nvml)
        return self.inventory

    def make_scheduler(self, inventory: Inventory, root: Path, config=None):
        self.inventory = inventory
        return RayScheduler(inventory)

    def describe(self) -> str:
        sandbox = "sandboxed with bubblewrap where the node has it" if self.sandbox != "none" else "unsandboxed"
        return f"ray cluster at {self.address} ({self._nodes} node(s)), TCP with CurveZMQ, {sandbox}"

    # -- lifecycle ----------------------------------------------------------------------------------
    def launch(self, container: Container) -> Launched:
        ray = _ray()
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        alloc: RayAllocation = container.allocation
        spec = container.spec
        handle: RayHandle | None = container.handle
        mounts = self._mounts(container)
        runtime_env, workdir_dest = ray_runtime_env(self.images_root, spec.image)
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
        keep = container.connection_info  # a restart keeps the ports its clients hold; the keys stay here
        keep = plain_info(keep, keep_key=False) if keep else None
        started = ray.get(handle.actor.start.remote(
            node_spec, alloc.gpu_type_wanted, self._simulated(handle.node_ip), sealed, mounts, keep,
            workdir_dest), timeout=self.start_timeout)
        handle.exit_ref = handle.actor.wait_exit.remote()
        handle.node_pid, handle.status, handle.death_check = started["pid"], None, None
        alloc.assigned = self._assigned(handle.node_ip, started["gpu_ids"], alloc.gpu_type_wanted)
        client_public, client_secret = curve.client_keypair(handle.control_secret, handle.kernel_public,
                                                            container.id)
        info = {  # the node's kernel admits this client pair alone (its ZAP)
            **started["connection_info"],
            "key": curve.hmac_key(handle.control_secret, handle.kernel_public, container.id),
            CLIENT_PUBLIC: client_public, CLIENT_SECRET: client_secret,
        }
        return Launched(connection_info=info, handle=handle, sandboxed=started["sandboxed"], node=handle.node_ip)

    def _simulated(self, node_ip: str) -> bool:
        return any(g.simulated for g in self._inventory_gpus() if g.node == node_ip)

    def _inventory_gpus(self):
        return getattr(self, "inventory", Inventory()).gpus

    def _assigned(self, node_ip: str, ids: list[str], gpu_type: str | None) -> tuple[Gpu, ...]:
        on_node = [g for g in self._inventory_gpus() if g.node == node_ip]
        out = []
        for i in ids:
            match = next((g for g in on_node if str(g.index) == i or g.uuid == i), None)
            out.append(match or assigned_gpu(i, gpu_type, uuid=f"ray-{node_ip}-{i}", name=gpu_type or "GPU",
                                             node=node_ip))
        return tuple(out)

    def _mounts(self, container: Container) -> list:
        if not container.mounts:
            return []
        shared = self.shared_volume_path
        paths = ", ".join(p for _, p, _ in container.mounts)
        if not shared:
            raise CellhopError(
                f"mounting volumes ({paths}) on the Ray runtime needs storage every node sees: set "
                "c.RayRuntime.shared_volume_path to a folder mounted at the same path on every node "
                "(NFS, a cluster file system) and keep cellhop's volumes there (c.Cellhop.state_dir); "
                "cellhop never mounts a node-local folder in its place")
        outside = [str(src) for src, _, _ in container.mounts if not Path(src).resolve().is_relative_to(
            Path(shared).resolve())]
        if outside:
            raise CellhopError(
                f"volume folder(s) {', '.join(outside)} are not under c.RayRuntime.shared_volume_path "
                f"({shared}), so other Ray nodes cannot see them; put cellhop's state_dir under it")
        return [(str(src), dest, ro) for src, dest, ro in container.mounts]

    def connect_port(self, container: Container, port: int):
        """Through the container's port relay on its node (port_tunnel.py): CurveZMQ, admitting only this
        control plane's relay key; nothing is published on the node."""
        from ..container_ports import PortUnreachable
        from ..port_tunnel import open_port, relay_context

        handle: RayHandle | None = container.handle
        ray = _ray()
        if handle is None or handle.exit_ref is None or ray.wait([handle.exit_ref], timeout=0)[0]:
            raise PortUnreachable(f"container {container.id} has no running kernel; start it again")
        try:
            url = ray.get(handle.actor.port_relay.remote(), timeout=CALL_TIMEOUT)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            raise PortUnreachable(f"the Ray actor of container {container.id} on {handle.node_ip} did not answer "
                                  f"({type(exc).__name__}); is the container still running?") from None
        with self._lock_relay_context:
            if self._relay_zmq is None:
                import zmq

                self._relay_zmq = zmq.Context()
        pair = curve.client_keypair(handle.control_secret, handle.kernel_public, relay_context(container.id))
        return open_port(self._relay_zmq, url, handle.kernel_public, pair, port,
                         where=f"container {container.id} on {handle.node_ip}",
                         alive=lambda: not self._relay_closing and not ray.wait([handle.exit_ref], timeout=0)[0])

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
        self._relay_closing = True  # the proxied connections still open end within a second (alive())
        if self._relay_zmq is not None:  # their threads close their own sockets; the context goes after them
            threading.Thread(target=self._relay_zmq.term, name="cellhop-port-tunnels-end", daemon=True).start()
        if self._owns_ray:
            _ray().shutdown()

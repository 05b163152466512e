"""The container runtime interface: one small class whose methods are the lifecycle.

The control plane (`ContainerManager`) owns queueing, phases, readiness,
idle timeouts and events; a runtime only knows how to run a container
kernel somewhere. `local` and `ray` are two short subclasses of this,
chosen by name (`c.Cellhop.runtime`) among the entry points of the group
`cellhop.runtimes` (factory.py), as jupyter_client chooses provisioners. A
runtime is a traitlets Configurable: its own settings are `c.<ItsClass>.*`
(`c.LocalRuntime.transport`, `c.RayRuntime.address`).

Adding one (say Kubernetes) is a subclass of ContainerRuntime and an entry
point in its distribution's pyproject.toml, nothing else:

    [project.entry-points."cellhop.runtimes"]
    kubernetes = "mypackage.kube:KubernetesRuntime"
"""

from __future__ import annotations

import logging
from abc import ABC, ABCMeta, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from traitlets.config import LoggingConfigurable

from ...container import ContainerSpec, ExitStatus
from ..container_record import Container
from ..paths import private_dir

log = logging.getLogger("cellhop")


@dataclass(frozen=True)
class Launched:
    """What `launch()` started: where the kernel listens and the runtime's own handle on it."""

    connection_info: dict  # the kernel's transport, ip, ports (or ipc sockets) and HMAC key
    handle: object  # the runtime's own handle (a Popen, a Ray actor's): given back in container.handle
    sandboxed: bool = False  # whether the kernel runs in a sandbox (bubblewrap)
    node: str | None = None  # where it runs: a cluster node's address (None: this host)


class _RuntimeMeta(ABCMeta, type(LoggingConfigurable)):
    pass


class ContainerRuntime(ABC, LoggingConfigurable, metaclass=_RuntimeMeta):
    """Starts and stops container kernels for the control plane.

    Made by the control plane with `from_config(config, root)`; its lifecycle methods are called
    from the manager's threads (launch from the one starting the container, poll every 0.25 s
    from its monitor), each for one container at a time.
    """

    name: str = "base"
    # Settings that were `c.Cellhop.<old>` before the runtime had its own: old name -> this class's trait.
    # A value set the old way still applies (with a deprecation warning) unless the new one is set too.
    deprecated_aliases: dict[str, str] = {}

    def __init__(self, root: Path | None = None, sandbox: str = "auto", images_root: Path | None = None,
                 state_dir: Path | None = None, start_timeout: float = 60.0, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root) if root is not None else None  # this host's folder for the runtime's files
        self.sandbox = sandbox  # c.Cellhop.sandbox: 'auto', 'bubblewrap' or 'none'
        self.images_root = images_root  # where built images live (cellhop.Image); see images/
        self.state_dir = state_dir  # c.Cellhop.state_dir: hidden from every container
        self.start_timeout = start_timeout
        self._take_deprecated_aliases()

    @classmethod
    def from_config(cls, config, root: Path) -> ContainerRuntime:
        """The runtime of a control plane whose settings are `config` (its `Cellhop`, which is also the
        runtime's parent: `c.<ThisClass>.*` apply) and whose runtime files are under `root`."""
        from ..images.service import images_root

        return cls(root=private_dir(Path(root) / "containers"), sandbox=config.sandbox,
                   images_root=images_root(config), state_dir=Path(config.state_dir) if config.state_dir else None,
                   start_timeout=config.start_timeout, parent=config)

    def _take_deprecated_aliases(self) -> None:
        """Apply `c.Cellhop.<old>` settings (set on the parent Cellhop) to this runtime's own traits."""
        configured = set()
        for klass in type(self).mro():
            if klass.__name__ in self.config:
                configured |= set(self.config[klass.__name__])
        for old, new in self.deprecated_aliases.items():
            value = getattr(self.parent, old, None)
            if value is None:
                continue
            if new in configured:
                log.warning("cellhop: c.Cellhop.%s is ignored: c.%s.%s is set too", old, type(self).__name__, new)
                continue
            log.warning("cellhop: c.Cellhop.%s is deprecated; set c.%s.%s instead", old, type(self).__name__, new)
            setattr(self, new, value)

    # -- what the manager asks of a runtime beyond the lifecycle ---------------------------------
    def load_inventory(self):
        """The GPUs this runtime's containers can get, or None for this host's (NVML or simulated)."""
        return None

    def make_scheduler(self, inventory, root: Path, config=None):
        """Who gets which GPU (a scheduling.GpuScheduler): this host's flock scheduler (its leases in the
        host folder, host_dir.py, else this user's `root`), unless the runtime places GPUs itself (Ray)."""
        from ..host_dir import locate
        from ..scheduler import Scheduler

        if config is None:
            return Scheduler(inventory, root)
        return Scheduler(inventory, locate(config.host_dir, root), private_root=root,
                         max_gpus_per_user=config.max_gpus_per_user or None,
                         monthly_gpu_hours=config.monthly_gpu_hours or None)

    def check_spec(self, spec: ContainerSpec) -> None:
        """What this runtime will need of `spec`, checked before any queueing: the image is built
        here. Raises a user's error (UnknownImage, InvalidContainerSpec; a 4xx over the API)."""
        if spec.image:
            from ..images.runtime_env import image_view

            image_view(self.images_root, spec.image)

    def hidden_folders(self) -> list[Path]:
        """This host's folders no container of this runtime may see (nor name as its working folder)."""
        return []

    def container_directory(self, container_id: str) -> Path | None:
        """This host's folder for a container's files (connection file, log), made now; None for a
        runtime that keeps them elsewhere."""
        return None

    def read_log(self, container: Container) -> str:
        """The container's log so far (the runtime may keep it elsewhere than this host)."""
        return container.log_path.read_text(errors="replace")

    def describe(self) -> str:
        """One line about how containers are isolated here, for `%gpu` and the API."""
        return self.name

    def connect_port(self, container: Container, port: int):
        """A blocking socket connected to `port` inside `container`, for the proxy (api/proxy.py): made
        from inside the container's network, never through a port opened for everyone. Raises
        container_ports.PortsNotSupported (501) on a runtime that has no such way."""
        from ..container_ports import PortsNotSupported

        raise PortsNotSupported(f"the {self.name} runtime cannot reach a container's ports yet (only the local "
                                "runtime can); nothing is published in their place")

    # -- standby containers (standby_pool.py): a runtime that can claim keeps them -----------------
    supports_standby = False  # whether a started container without GPUs can be given its GPUs later

    def claim(self, standby: Container, container: Container) -> None:
        """Give the standby `standby` the GPUs leased for `container` (container.allocation): make them
        visible to it and to no other. Raises gpu_attach.CannotAttach where it cannot (the request then
        starts a fresh container). The kernel's variables are the manager's to set (gpu_environment)."""
        from .gpu_attach import CannotAttach

        raise CannotAttach(f"the {self.name} runtime keeps no standby containers")

    def claimable(self, container: Container) -> bool:
        """Whether a standby could be given `container`'s GPUs here (else none is taken for it)."""
        return False

    def rekey(self, old_id: str, new_id: str) -> None:
        """A claimed standby's process now belongs to container `new_id`: move what is kept by id."""

    @staticmethod
    def gpu_environment(container: Container) -> dict[str, str]:
        """The variables that tell a container's kernel its id and GPUs (pinned by UUID)."""
        gpus = container.gpus
        uuids = ",".join(g.uuid for g in gpus)
        env = {"CUDA_VISIBLE_DEVICES": uuids, "NVIDIA_VISIBLE_DEVICES": uuids or "void",
               "CELLHOP_CONTAINER_ID": container.id, "CELLHOP_GPU_TYPE": gpus[0].type if gpus else ""}
        if gpus and gpus[0].simulated:
            env["CELLHOP_GPUS_SIMULATED"] = "1"
        return env

    # -- the lifecycle --------------------------------------------------------------------------
    @abstractmethod
    def launch(self, container: Container) -> Launched:
        """Start the container kernel for `container` (its GPUs are already allocated).

        Called in the STARTING phase, and again to restart it in place: then
        `container.connection_info` (and `container.handle`) hold the previous
        launch's, whose ports and keys the new kernel keeps. Returns as soon as
        the process is started; readiness is the manager's business (it sends
        kernel_info_request). The manager puts what it returns into the container.
        """

    @abstractmethod
    def poll(self, container: Container) -> ExitStatus | None:
        """None while the container runs, else how it ended. Cheap; called often."""

    @abstractmethod
    def interrupt(self, container: Container) -> None:
        """Interrupt the running cell (SIGINT to the kernel itself, never to the sandbox's init)."""

    @abstractmethod
    def terminate(self, container: Container) -> None:
        """Ask the container to stop (SIGTERM); the manager kills it after a grace period."""

    @abstractmethod
    def kill(self, container: Container) -> None:
        """Stop the container now, with everything it started."""

    def cleanup(self, container: Container) -> None:
        """Remove what the runtime made for `container` once it has exited."""

    def close(self) -> None:
        """Release what the runtime holds (called when the control plane stops)."""

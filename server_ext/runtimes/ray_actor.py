"""The node side of the Ray runtime: one Ray actor per container, running it with the local runtime.

The actor is placed by Ray (GPUs, `accelerator_type:<TYPE>`, the image's
runtime_env); on its node it is a `LocalRuntime` for one container: the
same bubblewrap sandbox, resource limits and exit statuses as on a single
host. It makes the kernel's CurveZMQ key pair here and hands back only the
public key; the HMAC key, the sealed secret values and the one client key the
kernel admits come from the shared secret (curve.py): the kernel runs through
curve_tunnel.serve_kernel, whose ZAP authenticator refuses every other client. CUDA_VISIBLE_DEVICES is Ray's assignment to this actor;
the sandbox's /dev holds only those GPUs' device files (their minor numbers
read from this node's NVML), and hides this node's Jupyter runtime folder,
cellhop's folders and the control plane's state directory (see LocalRuntime and
sandbox.py).
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ...inventory import assigned_gpu
from ...wire import ALLOWED_CLIENTS, connection_info, plain_info
from ..container_record import Container
from . import curve
from .local import LocalRuntime
from ..file_tree import remove_path


class NodeRuntime(LocalRuntime):
    """The local runtime on a Ray node, for one actor's container: the kernel is guarded (it runs through
    curve_tunnel.serve_kernel, whose ZAP authenticator admits only the client key the control plane
    derives), listens on TCP, and gets none of the Ray worker's own settings."""

    name = "ray-node"
    kernel_module = "cellhop.kernel.curve_tunnel"  # serve_kernel: the container kernel behind ZAP

    def extra_environment(self, container: Container) -> dict[str, str]:
        # the container's environment is an allow-list: the image's variables (its runtime_env's env_vars,
        # set in this actor's environment by Ray) are added, as a local image's are
        return {name: os.environ.get(name, value) for name, value in _runtime_env_vars().items()}

    def prepare_child(self) -> None:
        # a Ray worker blocks or ignores signals its kernel must act on (interrupt)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)


def _runtime_env_vars() -> dict[str, str]:
    """The env_vars of this actor's runtime_env (an image's environment), or none."""
    try:
        import ray

        runtime_env = ray.get_runtime_context().runtime_env or {}
    except Exception:  # not in a Ray worker
        return {}
    env_vars = runtime_env.get("env_vars") or {}
    return {str(k): str(v) for k, v in env_vars.items()}


@dataclass(frozen=True)
class _NodeAllocation:
    """What `Container.gpus` reads on the node: the GPUs Ray gave this actor."""

    gpus: tuple = ()


def _node_gpu_minors() -> dict[str, int]:
    """{NVML index and UUID: minor number} of this node's GPUs (empty without NVML)."""
    from ..nvml import read_nvml_inventory

    minors = {}
    for gpu in read_nvml_inventory().gpus:
        if gpu.minor is not None:
            minors[str(gpu.index)] = minors[gpu.uuid] = gpu.minor
    return minors


class ContainerActor:
    """Runs one container kernel on this Ray node. Methods are called by the control plane's RayRuntime."""

    def __init__(self, container_id: str, control_public: str, sandbox: str = "auto", state_dir: str | None = None):
        import ray

        self.container_id = container_id
        self._control_public = control_public
        self._public, self._secret = curve.keypair()  # the secret never leaves this process
        self.node_ip = ray.util.get_node_ip_address()
        self.node_id = ray.get_runtime_context().get_node_id()
        base = Path(tempfile.gettempdir()) / f"cellhop-ray-{os.getuid()}"
        base.mkdir(mode=0o700, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix=f"{container_id[:8]}-", dir=base))
        self._sandbox = sandbox
        self._state_dir = state_dir  # the control plane's state directory: hidden here too, when the node sees it
        self._runtime = None
        self._container = None
        self._lock = threading.Lock()
        self._relay = None  # port_tunnel.RelayServer: the container's ports, for the control plane alone
        self._relay_lock = threading.Lock()

    def public_key(self) -> dict:
        """The kernel's public key and where this actor runs (no secret in it)."""
        return {"public": self._public, "node_ip": self.node_ip, "node_id": self.node_id,
                "hostname": socket.gethostname()}

    def start(self, spec, gpu_type: str | None, simulated: bool, sealed_secrets: bytes,
              mounts: list, info: dict | None = None, workdir_dest: str | None = None) -> dict:
        """Start the kernel; returns its public connection info (no HMAC key, no secret key) and placement."""
        import ray

        with self._lock:
            if self._runtime is None:
                self._runtime = NodeRuntime(self.directory.parent / "runtime", sandbox=self._sandbox, transport="tcp",
                                            state_dir=Path(self._state_dir) if self._state_dir else None)
            ids = [str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]
            minors = _node_gpu_minors() if ids and not simulated else {}  # Ray's GPU ids: NVML indices or UUIDs
            gpus = tuple(assigned_gpu(i, gpu_type, n, simulated=simulated, minor=minors.get(i))
                         for n, i in enumerate(ids))
            container = Container(id=self.container_id, spec=spec)
            container.allocation = _NodeAllocation(gpus)
            container.directory = self.directory
            container.mounts = [tuple(m) for m in mounts]
            if workdir_dest:  # the image's folder, shipped by Ray as the working_dir
                container.mounts.append((Path.cwd(), workdir_dest, True))
            container.secret_env = curve.unseal(sealed_secrets, self._secret, self._control_public,
                                                self.container_id)
            if info is None:  # a restart keeps the ports its clients hold (keys: derived again below)
                info = connection_info("tcp", ip=self.node_ip)
            client_public, _ = curve.client_keypair(self._secret, self._control_public, self.container_id)
            container.connection_info = {
                **plain_info(info, keep_key=False),
                "key": curve.hmac_key(self._secret, self._control_public, self.container_id),
                "curve_publickey": self._public, "curve_secretkey": self._secret,  # read by ipykernel
                ALLOWED_CLIENTS: [client_public],  # read by curve_tunnel.serve_kernel: no other client
            }
            container.adopt(self._runtime.launch(container))
            self._container = container
            public = {**plain_info(container.connection_info, keep_key=False), "curve_serverkey": self._public}
            return {"connection_info": public, "gpu_ids": ids, "sandboxed": container.sandboxed,
                    "pid": container.handle.pid, "node_ip": self.node_ip, "node_id": self.node_id,
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    def wait_exit(self) -> dict:
        """Blocks until the kernel process ends; how it ended."""
        container = self._container
        container.handle.wait()
        self._stop_relay()
        status = self._runtime.poll(container)
        return {"code": status.code, "signal": status.signal, "oom": status.oom}

    def signal(self, name: str) -> None:
        container = self._container
        if container is None:
            return
        if name == "SIGINT":
            self._runtime.interrupt(container)
        elif name == "SIGTERM":
            self._runtime.terminate(container)
        else:
            self._runtime.kill(container)

    def read_log(self) -> str:
        try:
            if self._container is not None:  # waits for the masked log's last lines once the kernel exited
                return self._runtime.read_log(self._container)
            return (self.directory / "container.log").read_text(errors="replace")
        except OSError:
            return ""

    def port_relay(self) -> str:
        """The tcp URL of this container's port relay (port_tunnel.py), started on first use: CurveZMQ with
        this actor's keys, admitting only the relay client key derived with the control plane."""
        from ..port_tunnel import RelayServer, relay_context

        with self._relay_lock:
            if self._relay is None:
                admitted, _ = curve.client_keypair(self._secret, self._control_public,
                                                   relay_context(self.container_id))
                self._relay = RelayServer(self.node_ip, self._public, self._secret, admitted, self._connect_port)
            return self._relay.url

    def _connect_port(self, port: int) -> socket.socket:
        from ..container_ports import PortUnreachable

        container = self._container
        if container is None:
            raise PortUnreachable(f"container {self.container_id} has not started; start it first")
        return self._runtime.connect_port(container, port)

    def _stop_relay(self) -> None:
        with self._relay_lock:
            relay, self._relay = self._relay, None
        if relay is not None:
            relay.close()

    def cleanup(self) -> None:
        self._stop_relay()
        if self._container is not None:
            self._runtime.cleanup(self._container)

    def remove(self) -> None:
        """Kill the kernel and remove this container's folder (before the actor goes)."""
        self._stop_relay()
        if self._container is not None:
            self._runtime.kill(self._container)
            self._runtime.cleanup(self._container)
        remove_path(self.directory, ignore_errors=True)


def probe_node_gpus() -> dict:
    """This node's GPUs as NVML sees them, as Inventory.to_dict() (run as a Ray task pinned to the node)."""
    from ..nvml import read_nvml_inventory

    return read_nvml_inventory().to_dict()

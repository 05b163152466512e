"""What a container gets from volumes and secrets at launch, and gives back when it ends.

`attach(container)` checks the spec's volumes and secrets before any GPU is
queued for, records each mount (a flock-held lock file per container and
volume, so a volume in use cannot be deleted from any process), and fills
`container.mounts` (host folder, path inside, read-only) and
`container.secret_env` (the values, for the runtime to put in the
container's environment and nowhere else). `detach(container)` releases it all.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .config import Cellhop
from ..errors import CellhopError, VolumePathError
from ..volume_paths import mount_point_problem
from .container_record import Container
from .paths import private_dir, state_dir
from .secrets import SecretStore
from .volumes import MountLock, VolumeStore, parse_size


def storage_root(config: Cellhop) -> Path:
    """The state directory volumes and secrets live in (c.Cellhop.state_dir, else jupyter_data_dir()/cellhop)."""
    return private_dir(Path(config.state_dir)) if config.state_dir else state_dir()


class ContainerStorage:
    """The volumes and secrets of one control plane, and which containers use them."""

    def __init__(self, config: Cellhop | None = None, root: Path | None = None):
        self.config = config or Cellhop()
        self._root = Path(root) if root is not None else None
        self._volumes: VolumeStore | None = None
        self._secrets: SecretStore | None = None
        self._mounts: dict[str, list[MountLock]] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = storage_root(self.config)
        return self._root

    @property
    def volumes(self) -> VolumeStore:
        if self._volumes is None:
            self._volumes = VolumeStore(self.root / "volumes", parse_size(self.config.volume_quota))
        return self._volumes

    @property
    def secrets(self) -> SecretStore:
        if self._secrets is None:
            self._secrets = SecretStore(self.root / "secrets")
        return self._secrets

    def attach(self, container: Container) -> None:
        """Resolve the spec's secrets and mount its volumes; raises (holding nothing) when one is missing."""
        spec = container.spec
        if not spec.volumes and not spec.secrets:
            return
        if spec.secrets:
            container.secret_env = self.secrets.environment(spec.secrets, spec.caller)  # who really asked
        locks: list[MountLock] = []
        try:
            for mount in spec.volumes:
                problem = mount_point_problem(mount["path"])
                if problem:
                    raise VolumePathError(problem)
                if not mount["read_only"] and not self.volumes.exists(mount["name"]):
                    self.volumes.create(mount["name"])  # made on first use; a read-only one must exist
                lock = self.volumes.mount(mount["name"], {"container": container.id, "owner": spec.owner,
                                                          "path": mount["path"], "read_only": mount["read_only"]})
                locks.append(lock)
                container.mounts.append((self.volumes.data_path(mount["name"]), mount["path"], mount["read_only"]))
        except BaseException:
            for lock in locks:
                lock.release()
            container.mounts.clear()
            container.secret_env = {}
            raise
        with self._lock:
            self._mounts[container.id] = locks

    def detach(self, container: Container) -> None:
        """The container ended: its volumes are free to delete again."""
        with self._lock:
            locks = self._mounts.pop(container.id, [])
        for lock in locks:
            lock.release()

    def close(self) -> None:
        with self._lock:
            held, self._mounts = list(self._mounts.values()), {}
        for locks in held:
            for lock in locks:
                lock.release()


def unsandboxed_mount_error(container: Container) -> CellhopError:
    paths = ", ".join(p for _, p, _ in container.mounts)
    return CellhopError(f"mounting volumes ({paths}) needs bubblewrap's bind mounts, and this host runs "
                        "containers unsandboxed; install bubblewrap (apt-get install bubblewrap)")

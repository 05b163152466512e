"""The local runtime's standby claims: a standby's late folders, and giving it a request's GPUs and folder.

A standby container (standby_pool.py) is launched with two server-only folders bound into its sandbox
where the host allows (a root server that switches the containers' user): one its /dev links point into,
where a claim makes the leased GPUs' device files (gpu_attach.py), and one a claim attaches the notebook's
folder to (late_mounts.py). LocalRuntime takes these methods as a mixin.
"""

from __future__ import annotations

from pathlib import Path

from .. import late_mounts
from ..container_record import Container
from .gpu_attach import CannotAttach, attach_devices, late_device_folder


class StandbyClaims:
    """LocalRuntime's part in standby claims (see the module docstring)."""

    def init_standby_claims(self) -> None:
        self._late_devices: dict[str, Path | None] = {}  # standby id -> the folder its claim makes devices in
        self._late_workdirs: dict[str, Path | None] = {}  # standby id -> where its claim attaches a folder
        self._devices_allowed = True  # until a standby's device folder could not be made

    def prepare_late_folders(self, container: Container):
        """For a launch: (late devices for Sandbox.prepare or None, the late working folder or None);
        both None for a container that is not a standby or a host that cannot claim into one."""
        if not (container.standby and self.sandbox.user.switch):
            self._late_devices[container.id] = self._late_workdirs[container.id] = None
            return None, None
        late = late_device_folder(container.directory)
        if late is None:
            self._devices_allowed = False  # the runtime folder's file system (or the host) does not allow it
        self._late_devices[container.id] = late[0] if late else None
        late_work = late_mounts.prepare(container.directory, self.sandbox.mapper)
        self._late_workdirs[container.id] = late_work
        return late, late_work

    supports_standby = True

    def claimable(self, container: Container) -> bool:
        """Simulated GPUs (or none): always. Real ones: where the standbys' device folders can be made
        (the server runs as root and switches the containers' user; the folder's file system allows devices)."""
        real = any(not g.simulated for g in container.gpus)
        if container.spec.workdir is not None and (self.sandbox is None or not self.sandbox.user.switch):
            return False  # the notebook's folder could not be attached to a standby here (late_mounts.py)
        return not real or (self.sandbox is not None and self.sandbox.user.switch and self._devices_allowed)

    def claim(self, standby: Container, container: Container) -> None:
        """Make the leased GPUs' device files in the standby's late-device folder (gpu_attach.py); simulated
        GPUs have none."""
        attach_devices(self._late_devices.get(standby.id), (g.minor for g in container.gpus if not g.simulated))
        spec = container.spec
        if spec.workdir is not None:  # the notebook's folder, where the kernel is told to chdir (claimed_workdir)
            folder = self._late_workdirs.get(standby.id)
            if folder is None:
                raise CannotAttach(f"standby container {standby.id} cannot be given a working folder")
            late_mounts.attach(folder, Path(spec.workdir), spec.workdir_read_only, standby.handle.pid,
                               self.sandbox.mapper)

    def claimed_workdir(self, standby: Container) -> str | None:
        """Where a claimed standby's kernel finds the notebook's folder attached (its claim's chdir)."""
        return str(self._late_workdirs.get(standby.id) or "") or None

    def rekey(self, old_id: str, new_id: str) -> None:
        for kept in (self._limits, self._log_pumps, self._launches, self._late_devices, self._late_workdirs):
            if old_id in kept:
                kept[new_id] = kept.pop(old_id)

    def forget_late_folders(self, container_id: str) -> None:
        self._late_devices.pop(container_id, None)
        self._late_workdirs.pop(container_id, None)  # its mounts were in its own namespaces: nothing to undo

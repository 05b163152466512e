"""The notebook side's view of a control plane's volumes and secrets.

`StorageClient` is what `cellhop.Volume`, `cellhop.Secret`, the CLI and the
volume browser use; `ControlPlaneClient.storage()` hands out the right one:
`LocalStorageClient` over the stores themselves (an embedded control plane,
or the CLI on this host's state directory) or `HttpStorageClient`
(http_storage_client.py) over the REST API. Both behave the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import BinaryIO


class StorageClient(ABC):
    """Volume and secret operations. Paths are relative to a volume's root (see volume_paths)."""

    # -- volumes ----------------------------------------------------------------
    @abstractmethod
    def volume_create(self, name: str, quota: str | int | None = None) -> dict:
        """Create volume `name` unless it exists; its info (name, created, quota, usage, mounted_by)."""

    @abstractmethod
    def volume_list(self) -> list[dict]: ...

    @abstractmethod
    def volume_info(self, name: str) -> dict: ...

    @abstractmethod
    def volume_delete(self, name: str) -> None:
        """Delete a volume and its files; refused (VolumeInUse) while a container mounts it."""

    @abstractmethod
    def volume_ls(self, name: str, path: str = "") -> list[dict]:
        """Entries `{"name", "path", "type": file|dir|link, "size", "modified"}` of a folder (or a file)."""

    @abstractmethod
    def volume_put(self, name: str, path: str, source: BinaryIO | bytes, size: int | None = None) -> dict:
        """Write `source` to `path` atomically (streamed; any size). Its new entry."""

    @abstractmethod
    def volume_read(self, name: str, path: str) -> Iterator[bytes]:
        """The bytes of file `path`, chunk by chunk."""

    @abstractmethod
    def volume_rm(self, name: str, path: str, recursive: bool = False) -> None: ...

    @abstractmethod
    def volume_mv(self, name: str, src: str, dst: str) -> dict: ...

    @abstractmethod
    def volume_mkdir(self, name: str, path: str) -> dict: ...

    @abstractmethod
    def volume_usage(self, name: str) -> dict:
        """{"bytes", "files", "quota"}."""

    # -- secrets ----------------------------------------------------------------
    @abstractmethod
    def secret_create(self, name: str, values: dict[str, str], replace: bool = False,
                      session: bool = False, owner: dict | None = None) -> dict:
        """Store a secret (or keep it for this session only, for the notebook kernel `owner`:
        `{"pid", "host", "label"}`); its view: name and keys, never values."""

    @abstractmethod
    def secret_list(self) -> list[dict]: ...

    @abstractmethod
    def secret_delete(self, name: str) -> None: ...


class LocalStorageClient(StorageClient):
    """Straight onto a VolumeStore and a SecretStore in this process."""

    def __init__(self, volumes, secrets):
        self.volumes = volumes
        self.secrets = secrets

    def volume_create(self, name, quota=None):
        return self.volumes.create(name, quota=quota)

    def volume_list(self):
        return self.volumes.list()

    def volume_info(self, name):
        return self.volumes.info(name)

    def volume_delete(self, name):
        self.volumes.delete(name)

    def volume_ls(self, name, path=""):
        return self.volumes.ls(name, path)

    def volume_put(self, name, path, source, size=None):
        return self.volumes.put(name, path, source, size=size)

    def volume_read(self, name, path):
        return self.volumes.read_chunks(name, path)

    def volume_rm(self, name, path, recursive=False):
        self.volumes.rm(name, path, recursive=recursive)

    def volume_mv(self, name, src, dst):
        return self.volumes.mv(name, src, dst)

    def volume_mkdir(self, name, path):
        return self.volumes.mkdir(name, path)

    def volume_usage(self, name):
        return self.volumes.usage(name)

    def secret_create(self, name, values, replace=False, session=False, owner=None):
        return self.secrets.create(name, values, replace=replace, session=session, owner=owner)

    def secret_list(self):
        return self.secrets.list()

    def secret_delete(self, name):
        self.secrets.delete(name)

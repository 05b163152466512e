"""`cellhop.Volume`: a named persistent volume, filled and read from the notebook without a container.

    vol = cellhop.Volume("datasets")        # made on first use
    vol.put("train.csv")                     # or vol.put(local_folder, "raw/"), vol.put(b"...", "x.bin")
    vol.ls(), vol.get("train.csv", "copy.csv"), vol.rm("old", recursive=True), vol.mv("a", "b"), vol.usage()

    %%remote --volume datasets:/data         # mounted in the container (":ro" for read-only)
    @cellhop.remote(volumes={"/data": vol})

A Volume object holds only its name: it pickles as such and reaches the
control plane through this process's control plane client.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..volume_paths import VolumePathError, parse_mounts, parse_path, volume_name


def _client():
    from .control_client import get_control_plane

    return get_control_plane().storage()


class Volume:
    """A named volume of this host's control plane (see the module docstring)."""

    def __init__(self, name: str, quota: str | int | None = None, *, client=None):
        self.name = volume_name(name)
        self.quota = quota
        self._client = client  # a StorageClient; None: this process's control plane's
        self._made = False

    def __repr__(self) -> str:
        return f"Volume({self.name!r})"

    def __reduce__(self):
        return (Volume, (self.name,))

    def __eq__(self, other) -> bool:
        return isinstance(other, Volume) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("cellhop.Volume", self.name))

    def _storage(self):
        client = self._client or _client()
        if not self._made:
            client.volume_create(self.name, quota=self.quota)
            self._made = True
        return client

    # -- the volume ---------------------------------------------------------------
    def info(self) -> dict:
        """{"name", "created", "quota", "usage", "mounted_by"}."""
        return self._storage().volume_info(self.name)

    def usage(self) -> dict:
        """{"bytes", "files", "quota"}."""
        return self._storage().volume_usage(self.name)

    def delete(self) -> None:
        """Delete the volume and everything in it (refused while a container mounts it)."""
        (self._client or _client()).volume_delete(self.name)
        self._made = False

    def mount(self, path: str, read_only: bool = False) -> dict:
        """A mount of this volume, for `cellhop.remote(volumes=[...])`."""
        return parse_mounts([{"name": self.name, "path": path, "read_only": read_only}])[0]

    # -- files --------------------------------------------------------------------
    def ls(self, path: str = "") -> list[dict]:
        """Entries of a folder: {"name", "path", "type" (file, dir, link), "size", "modified"}."""
        return self._storage().volume_ls(self.name, path)

    def put(self, source, path: str | None = None) -> list[dict]:
        """Upload a local file or folder (or bytes) to `path` (default: the local name at the root).

        A folder's files go under `path/` keeping their layout. Each file lands
        whole or not at all. Returns the entries written.
        """
        storage = self._storage()
        if isinstance(source, (bytes, bytearray, memoryview)):
            if path is None:
                raise VolumePathError("give the path to write bytes to, e.g. vol.put(data, 'blob.bin')")
            return [storage.volume_put(self.name, path, bytes(source))]
        local = Path(source)
        if local.is_dir():
            base = path.rstrip("/") if path else local.name
            written = []
            for folder, dirs, files in os.walk(local):
                dirs.sort()
                rel = Path(folder).relative_to(local).as_posix()
                for fname in sorted(files):
                    target = "/".join(p for p in (base, "" if rel == "." else rel, fname) if p)
                    written.append(self._put_file(storage, Path(folder) / fname, target))
            return written
        if path is None or path.endswith("/"):
            path = (path or "") + local.name
        return [self._put_file(storage, local, path)]

    def _put_file(self, storage, local: Path, path: str) -> dict:
        parse_path(path)  # refuse a bad path before reading anything
        with open(local, "rb") as f:
            return storage.volume_put(self.name, path, f, size=os.fstat(f.fileno()).st_size)

    def get(self, path: str, local: str | os.PathLike | None = None) -> Path:
        """Download file `path` to `local` (default: its name in the current folder), streamed.

        Written aside and renamed, so a failed download leaves no partial file.
        """
        parts = parse_path(path)
        target = Path(local) if local is not None else Path(parts[-1])
        if target.is_dir():
            target = target / parts[-1]
        tmp = target.with_name(f".{target.name}.cellhop-part")
        try:
            with open(tmp, "wb") as f:
                for chunk in self._storage().volume_read(self.name, path):
                    f.write(chunk)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def read_bytes(self, path: str) -> bytes:
        """The content of a (small) file."""
        return b"".join(self._storage().volume_read(self.name, path))

    def rm(self, path: str, recursive: bool = False) -> None:
        self._storage().volume_rm(self.name, path, recursive=recursive)

    def mv(self, src: str, dst: str) -> dict:
        return self._storage().volume_mv(self.name, src, dst)

    def mkdir(self, path: str) -> dict:
        return self._storage().volume_mkdir(self.name, path)

    @staticmethod
    def list() -> list[dict]:
        """Every volume of this control plane, with usage and who mounts it."""
        return _client().volume_list()


def mounts_of(volumes) -> list[dict]:
    """Mounts from what users write: {"/data": Volume or "name"}, ["name:/path[:ro]", ...] or mount dicts."""
    if volumes is None:
        return []
    if isinstance(volumes, dict) and not {"name", "path"} <= set(volumes):
        items = []
        for path, vol in volumes.items():
            name = vol.name if isinstance(vol, Volume) else vol
            items.append({"name": name, "path": path})
        return parse_mounts(items)
    return parse_mounts(volumes)

"""The image store on disk: finished layers, build locks, build logs, image records.

    <root>/layers/<key>/          a finished layer (meta.json written last, then renamed into place)
    <root>/layers/<key>@<v>/      a forced rebuild of <key> (force_build): a new folder, never in place
    <root>/layers/<key>@current   symlink to the folder <key> means now, once it was rebuilt
    <root>/layers/.tmp-<key>-*    a layer being built (never read; removed when its build fails or
                                  by the next build of that key: a killed builder leaves only this)
    <root>/locks/<key>.lock       flock held while <key> is built, by whichever process builds it
    <root>/locks/<key>.use        shared flock held by every build whose plan has <key>, for the whole
                                  build (prune takes it exclusively, without waiting, to remove <key>)
    <root>/logs/<key>.log         the build log of layer <key> (followed live by waiting builders)
    <root>/images/<key>.json      an image someone asked for: its layers, name, spec, last use

Safe across processes: a layer exists only once complete (atomic rename), and
one flock per key makes two processes asking for the same layer build it once.
A layer's content never changes or goes while it may be used: a forced
rebuild goes into a new folder (a container started earlier keeps the folders
it was given, runtime_view resolves keys to folders), and prune removes old
folders only of images no live container uses, never a layer a build holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
import time
from pathlib import Path

from ...errors import ImageNotFound
from .. import file_tree
from ..file_tree import remove_path


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tree_size(path: Path, seen: set | None = None) -> int:
    """Bytes of the files under `path`, each inode counted once (hard links share `seen`); a tree of any
    depth (a build step may leave one), never following a link."""
    seen = set() if seen is None else seen
    total = 0
    try:
        root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        for _, entry in file_tree.walk(root):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            ident = (st.st_dev, st.st_ino)
            if ident not in seen:
                seen.add(ident)
                total += st.st_blocks * 512 if st.st_blocks else st.st_size
    finally:
        os.close(root)
    return total


class ImageStore:
    """Layers and images under `root`. Creates nothing until something is built."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.layers = self.root / "layers"
        self.locks = self.root / "locks"
        self.logs = self.root / "logs"
        self.images = self.root / "images"

    def ensure(self) -> None:
        for d in (self.layers, self.locks, self.logs, self.images):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- layers -----------------------------------------------------------------
    def layer_dir(self, key: str) -> Path:
        """The folder layer `key` is now: its latest forced rebuild, else `layers/<key>`."""
        try:
            return self.layers / os.readlink(self.layers / f"{key}@current")
        except OSError:
            return self.layers / key

    def layer(self, key: str) -> dict | None:
        """A finished layer's meta, or None."""
        return _read_json(self.layer_dir(key) / "meta.json")

    def log_path(self, key: str) -> Path:
        return self.logs / f"{key}.log"

    @contextlib.contextmanager
    def locked(self, key: str, wait=None):
        """Hold the build lock of `key`. While another process holds it, call `wait()` every 0.1 s."""
        self.ensure()
        fd = os.open(self.locks / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if wait is not None:
                        wait()
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def using(self, keys):
        """Hold layers `keys` for a build (shared: builds do not exclude each other); prune and delete
        leave them alone meanwhile. Waits only while a prune is removing one of them."""
        self.ensure()
        fds = []
        try:
            for key in dict.fromkeys(keys):
                fd = os.open(self.locks / f"{key}.use", os.O_RDWR | os.O_CREAT, 0o600)
                fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            for fd in fds:
                os.close(fd)

    @contextlib.contextmanager
    def _removable(self, key: str):
        """Yields True (holding `key`'s use lock exclusively) when no build holds or builds `key`."""
        if self.is_locked(key):
            yield False
            return
        path = self.locks / f"{key}.use"
        if not path.exists():
            yield True
            return
        fd = os.open(path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def is_locked(self, key: str) -> bool:
        """True while some process builds `key`."""
        path = self.locks / f"{key}.lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def new_tmp(self, key: str) -> Path:
        """A fresh folder to build `key` in (call with the key's lock held: leftovers are removed)."""
        self.remove_leftovers(key)
        path = self.layers / f".tmp-{key}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o755)
        return path

    def remove_leftovers(self, key: str) -> None:
        for stale in self.layers.glob(f".tmp-{key}-*"):
            remove_path(stale, ignore_errors=True)

    def commit(self, tmp: Path, key: str, meta: dict) -> dict:
        """Make `tmp` the layer `key`, atomically. A rebuild (forced) of a layer that exists goes into a
        new folder `<key>@<version>` that `<key>@current` then points to: the older folder stays, for the
        containers that still use it, until prune finds none does."""
        _write_json(tmp / "meta.json", meta)
        pointer = self.layers / f"{key}@current"
        if not self.layer_dir(key).exists():
            pointer.unlink(missing_ok=True)  # it pointed at a folder prune removed
            final = self.layers / key
            if final.exists():
                remove_path(final)  # never used: the pointer was elsewhere
            os.rename(tmp, final)
            return meta
        name = f"{key}@{time.time_ns():x}{secrets.token_hex(2)}"
        os.rename(tmp, self.layers / name)
        link = self.layers / f".ptr-{key}-{secrets.token_hex(4)}"
        os.symlink(name, link)
        os.replace(link, pointer)  # atomic: a reader sees the old folder or the new one
        return meta

    # -- images -----------------------------------------------------------------
    def record(self, key: str, name: str | None, spec: dict, layers: list[str], info: dict) -> dict:
        """Remember an image someone built (or found cached): for `images` listings and prune."""
        self.ensure()
        path = self.images / f"{key}.json"
        old = _read_json(path) or {}
        now = time.time()
        rec = {**old, "key": key, "name": name or old.get("name"), "spec": spec, "layers": layers,
               "created": old.get("created", now), "last_used": now, **info}
        _write_json(path, rec)
        return rec

    def image(self, key_or_name: str) -> dict:
        rec = _read_json(self.images / f"{key_or_name}.json") if "/" not in key_or_name else None
        if rec is None:
            named = [r for r in self.list_images() if r.get("name") == key_or_name]
            if named:
                rec = max(named, key=lambda r: r.get("last_used", 0))
        if rec is None:
            raise ImageNotFound(f"no image {key_or_name!r} in {self.root}; list them with GET images "
                                "(or client.images()) and build it first")
        return rec

    def touch(self, key: str) -> None:
        path = self.images / f"{key}.json"
        rec = _read_json(path)
        if rec is not None:
            rec["last_used"] = time.time()
            _write_json(path, rec)

    def list_images(self) -> list[dict]:
        if not self.images.is_dir():
            return []
        out = []
        for path in sorted(self.images.glob("*.json")):
            rec = _read_json(path)
            if rec is not None:
                out.append(rec)
        return out

    def image_size(self, rec: dict) -> int:
        seen: set = set()
        return sum(tree_size(self.layer_dir(k), seen) for k in rec.get("layers", []) if self.layer_dir(k).exists())

    def image_log(self, key_or_name: str) -> str:
        rec = self.image(key_or_name)
        parts = []
        for n, layer_key in enumerate(rec.get("layers", []), 1):
            meta = self.layer(layer_key) or {}
            parts.append(f"=> Step {n}: {meta.get('title', layer_key)}")
            try:
                parts.append(self.log_path(layer_key).read_text(errors="replace").rstrip())
            except OSError:
                parts.append("(no log)")
        return "\n".join(p for p in parts if p) + "\n"

    def delete(self, key: str, keep: set | None = None) -> list[str]:
        """Forget image `key` and remove the layers no other image uses; the layers removed.
        `keep`: images (keys or names) live containers use, whose folders stay."""
        rec = self.image(key)
        (self.images / f"{rec['key']}.json").unlink(missing_ok=True)
        return self.prune_layers(keep)

    def prune_layers(self, keep: set | None = None) -> list[str]:
        """Remove layers no image record uses, folders of layers rebuilt since (unless an image in `keep`,
        keys or names of images live containers use, has that layer), and leftovers of killed builds;
        never a layer a build holds (`using`) or builds. The folders removed."""
        if not self.layers.is_dir():
            return []
        records = self.list_images()
        used = {k for rec in records for k in rec.get("layers", [])}
        keep = keep or set()
        live = {k for rec in records if rec["key"] in keep or (rec.get("name") and rec["name"] in keep)
                for k in rec.get("layers", [])}
        removed = []
        current: dict[str, str] = {}
        for path in self.layers.glob("*@current"):
            try:
                current[path.name[:-len("@current")]] = os.readlink(path)
            except OSError:
                pass
        entries = sorted(self.layers.iterdir(), key=lambda p: p.name.endswith("@current"))  # pointers last
        for path in entries:
            name = path.name
            if name.startswith(".old-"):
                remove_path(path, ignore_errors=True)
                continue
            if name.startswith(".ptr-"):
                path.unlink(missing_ok=True)
                continue
            if name.startswith(".tmp-"):
                key = name[5:].rsplit("-", 1)[0]
                if not self.is_locked(key):
                    remove_path(path, ignore_errors=True)
                continue
            key, _, version = name.partition("@")
            if version == "current":
                if key not in used:
                    with self._removable(key) as ok:
                        if ok:
                            path.unlink(missing_ok=True)
                continue
            if key in used and (current.get(key, key) == name or key in live):
                continue  # the layer's present folder, or one a live container may still run from
            with self._removable(key) as ok:
                if not ok:
                    continue
                remove_path(path, ignore_errors=True)
                if key not in used and not any(self.layers.glob(f"{key}@*")) and not (self.layers / key).exists():
                    self.log_path(key).unlink(missing_ok=True)
                removed.append(name)
        return removed

    def prune(self, unused_for: float | None = None, keep: set | None = None) -> dict:
        """Delete images not used for `unused_for` seconds (None: keep every image record), then
        every layer no image uses. `keep`: images (keys or names) never deleted (those in use)."""
        deleted = []
        keep = keep or set()
        if unused_for is not None:
            cutoff = time.time() - unused_for
            for rec in self.list_images():
                if (rec["key"] not in keep and rec.get("name") not in keep
                        and rec.get("last_used", 0) < cutoff):
                    (self.images / f"{rec['key']}.json").unlink(missing_ok=True)
                    deleted.append(rec["key"])
        return {"images": deleted, "layers": self.prune_layers(keep)}

    # -- what a container needs -------------------------------------------------
    def runtime_view(self, key: str) -> dict:
        """How to run a container in image `key`: interpreter, environment, folders to expose."""
        meta = self.layer(key)
        if meta is None:
            raise ImageNotFound(f"image {key} is not built in {self.root}; build it first "
                                "(Image.build(), or use it in %%remote --image, which builds it)")
        self.touch(key)
        folder = self.layer_dir  # each key's folder now: a container keeps these even if a key is rebuilt
        venv = folder(meta["venv"]) / "venv"
        env = dict(meta.get("env", {}))
        bins = [str(folder(k) / rel) for k, rel in meta.get("path", [])] + [str(venv / "bin")]
        libs = [str(folder(k) / rel) for k, rel in meta.get("ld_library_path", [])]
        pythonpath = [str(folder(k) / rel) for k, rel in meta.get("pythonpath", [])]
        return {
            "key": key,
            "python": str(venv / "bin" / "python"),
            "env": env,
            "venv": str(venv),
            "path_prepend": bins,
            "ld_library_path": libs,
            "pythonpath": pythonpath,
            "mounts": [(str(folder(k) / rel), dest) for k, rel, dest in meta.get("mounts", [])],
            "binds": [str(self.layers)],
            "preload": list(meta.get("preload", [])),
        }

"""The control plane's images: build, list, log, delete, prune (what `ControlPlane.images` is)."""

from __future__ import annotations

from pathlib import Path

from ...errors import ImageInUse
from .builder import ImageBuilder
from .store import ImageStore


def images_root(config) -> Path:
    """`<state_dir>/images` (c.Cellhop.state_dir, default jupyter_data_dir()/cellhop)."""
    if getattr(config, "state_dir", ""):
        return Path(config.state_dir) / "images"
    from ..paths import state_dir

    return state_dir() / "images"


class Images:
    """One store of images and its builder; events go to `publish` (the control plane's stream)."""

    def __init__(self, root: Path, publish=None, in_use=None):
        self.store = ImageStore(root)
        self.builder = ImageBuilder(self.store, publish)
        self._in_use = in_use or (lambda: set())

    def build(self, spec: dict, on_event=None, force: bool = False) -> dict:
        return self.builder.build(spec, on_event=on_event, force=force)

    def _view(self, rec: dict, in_use: set) -> dict:
        return {"key": rec["key"], "name": rec.get("name"), "steps": rec.get("steps", []),
                "python_version": rec.get("python_version"), "layers": rec.get("layers", []),
                "size": self.store.image_size(rec), "created": rec.get("created"),
                "last_used": rec.get("last_used"), "in_use": rec["key"] in in_use,
                "building": any(self.store.is_locked(k) for k in rec.get("layers", []))}

    def list(self) -> list[dict]:
        """Every image built here: name, steps, size (bytes on disk), last use, whether a container uses it."""
        in_use = self._in_use()
        return [self._view(rec, in_use) for rec in self.store.list_images()]

    def get(self, key_or_name: str) -> dict:
        return {**self._view(self.store.image(key_or_name), self._in_use()),
                "spec": self.store.image(key_or_name).get("spec")}

    def log(self, key_or_name: str) -> str:
        return self.store.image_log(key_or_name)

    def delete(self, key_or_name: str) -> dict:
        rec = self.store.image(key_or_name)
        if rec["key"] in self._in_use():
            raise ImageInUse(f"image {rec.get('name') or rec['key']} is used by a running container; "
                             "stop that container first (GET containers shows which)")
        return {"deleted": rec["key"], "layers_removed": self.store.delete(rec["key"], keep=self._in_use())}

    def prune(self, unused_for: float | None = None) -> dict:
        """Remove layers no image uses (and, with `unused_for` seconds, images unused that long)."""
        return self.store.prune(unused_for, keep=self._in_use())

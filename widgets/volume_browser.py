"""`VolumeBrowser(vol)`: a volume's folders in a notebook, with upload, download, delete and a usage bar.

Plain ipywidgets: one row per entry (a folder opens on click), a FileUpload
that writes each chosen file into the folder shown (each lands whole or not
at all), Download (to the notebook's working folder) and Delete on every
row, a new-folder box, and a bar of the volume's usage against its quota.
Every action goes through `cellhop.Volume`, so the same paths are refused
here as everywhere else, and errors show in the widget instead of raising.
"""

from __future__ import annotations

from pathlib import Path

import ipywidgets as w

from ..errors import CellhopError
from ..sizes import format_size


def _fits():
    """A button as wide as its icon and label (a fixed width cut "Download" to "Downlo…"), never shrunk."""
    return w.Layout(width="auto", flex="0 0 auto")


class VolumeBrowser(w.VBox):
    """Browse `volume` (a `cellhop.Volume` or its name) from `path` (default: its root)."""

    def __init__(self, volume, path: str = "", download_dir: str | Path = ".", **kwargs):
        from ..kernel.volume import Volume

        self.volume = volume if isinstance(volume, Volume) else Volume(volume)
        self.path = path.strip("/")
        self.download_dir = Path(download_dir)
        self.title = w.HTML()
        self.usage_bar = w.FloatProgress(min=0.0, max=1.0, layout=w.Layout(width="240px"))
        self.usage_text = w.Label()
        self.up_button = w.Button(description="Up", icon="arrow-up", layout=_fits())
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=_fits())
        self.upload = w.FileUpload(multiple=True, description="Upload")
        self.folder_name = w.Text(placeholder="new folder", layout=w.Layout(width="160px"))
        self.folder_button = w.Button(description="Make folder", layout=_fits())
        self.rows = w.VBox()
        self.message = w.Label()
        self.up_button.on_click(lambda _: self.up())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.folder_button.on_click(lambda _: self.mkdir(self.folder_name.value))
        self.upload.observe(self._on_upload, names="value")
        toolbar = w.HBox([self.up_button, self.refresh_button, self.upload, self.folder_name, self.folder_button])
        super().__init__([self.title, w.HBox([self.usage_bar, self.usage_text]), toolbar, self.rows, self.message],
                         **kwargs)
        self.refresh()

    # -- actions (also what the buttons call) ----------------------------------------------
    def _join(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name

    def _attempt(self, action, done: str | None = None) -> bool:
        try:
            action()
        except (CellhopError, OSError) as exc:
            self.message.value = f"⚠ {exc}"
            return False
        self.message.value = done or ""
        return True

    def refresh(self) -> None:
        """Read the folder and the usage again."""
        def load():
            entries = self.volume.ls(self.path)
            usage = self.volume.usage()
            self._show(entries, usage)

        self._attempt(load, self.message.value)

    def _show(self, entries: list[dict], usage: dict) -> None:
        where = "/" + self.path if self.path else "/"
        self.title.value = f"<b>volume {self.volume.name}</b> <code>{where}</code>"
        quota = usage.get("quota")
        self.usage_bar.value = min(1.0, usage["bytes"] / quota) if quota else 0.0
        self.usage_text.value = f"{format_size(usage['bytes'])} of {format_size(quota)} · {usage['files']} file(s)"
        self.up_button.disabled = not self.path
        self.rows.children = [self._row(e) for e in entries] or [w.Label("(empty folder)")]

    def _row(self, entry: dict) -> w.HBox:
        name = entry["name"]
        if entry["type"] == "dir":
            label = w.Button(description=f"{name}/", icon="folder", layout=w.Layout(width="260px"))
            label.on_click(lambda _, n=name: self.open_folder(n))
            size = w.Label("")
        else:
            label = w.Label(name + (" → (link)" if entry["type"] == "link" else ""), layout=w.Layout(width="260px"))
            size = w.Label(format_size(entry["size"]), layout=w.Layout(width="90px"))
        delete = w.Button(description="Delete", icon="trash", layout=_fits())
        delete.on_click(lambda _, n=name: self.delete(n))
        parts = [label, size]
        if entry["type"] == "file":
            download = w.Button(description="Download", icon="download", layout=_fits())
            download.on_click(lambda _, n=name: self.download(n))
            parts.append(download)
        return w.HBox([*parts, delete])

    def open_folder(self, name: str) -> None:
        """Show folder `name` of the folder shown."""
        target = self._join(name)

        def load():
            entries = self.volume.ls(target)
            if [e["path"] for e in entries] == [target] and entries[0]["type"] != "dir":
                raise CellhopError(f"{target!r} is a file, not a folder")
            self.path = target
            self._show(entries, self.volume.usage())

        self._attempt(load)

    def up(self) -> None:
        self.path = self.path.rsplit("/", 1)[0] if "/" in self.path else ""
        self.refresh()

    def upload_files(self, files) -> None:
        """Write each {"name", "content"} (FileUpload's value) into the folder shown."""
        names = []
        for f in files:
            if not self._attempt(lambda f=f: self.volume.put(bytes(f["content"]), self._join(f["name"]))):
                return
            names.append(f["name"])
        self.refresh()
        self.message.value = f"uploaded {', '.join(names)}"

    def _on_upload(self, change) -> None:
        if change["new"]:
            self.upload_files(change["new"])
            self.upload.value = ()

    def download(self, name: str) -> Path | None:
        """Save file `name` into `download_dir` (the notebook's working folder by default)."""
        saved: list[Path] = []
        ok = self._attempt(lambda: saved.append(self.volume.get(self._join(name), self.download_dir / name)))
        if ok:
            self.message.value = f"saved {saved[0]}"
        return saved[0] if saved else None

    def delete(self, name: str) -> None:
        if self._attempt(lambda: self.volume.rm(self._join(name), recursive=True)):
            self.refresh()
            self.message.value = f"deleted {name}"

    def mkdir(self, name: str) -> None:
        if name and self._attempt(lambda: self.volume.mkdir(self._join(name))):
            self.folder_name.value = ""
            self.refresh()

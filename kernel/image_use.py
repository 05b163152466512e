"""Using an Image from the notebook side: find it by name, build it with visible progress, check values."""

from __future__ import annotations

import sys

from ..errors import CellhopError
from ..image_spec import Image
from .image_compat import check_image_compat


def image_named(shell, name: str) -> Image:
    """The Image held by notebook variable `name` (for `--image NAME`)."""
    ns = getattr(shell, "user_ns", {}) if shell is not None else {}
    if name not in ns:
        raise CellhopError(f"--image {name}: no variable {name!r} in the notebook; define it first, e.g. "
                           f"{name} = cellhop.Image.current().pip_install('numpy')")
    value = ns[name]
    if not isinstance(value, Image):
        raise CellhopError(f"--image {name}: {name!r} is a {type(value).__name__}, not a cellhop.Image; "
                           f"make it with cellhop.Image.current() or cellhop.Image.python('3.11')")
    return value if value.name else value.named(name)


class BuildProgress:
    """Shows a build only if it does work: an ImageBuild widget in a kernel, lines on stderr elsewhere."""

    def __init__(self, name: str | None, in_kernel: bool):
        self.name = name
        self.in_kernel = in_kernel
        self.widget = None
        self._plan = None
        self._shown = False

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "plan":
            self._plan = event
            return
        if not self._shown and kind == "step" and event.get("state") in ("building", "waiting"):
            self._shown = True
            if self.in_kernel:
                from IPython.display import display

                from ..widgets.image_build import ImageBuild

                self.widget = ImageBuild(self.name)
                if self._plan is not None:
                    self.widget.handle(self._plan)
                display(self.widget)
            else:
                print(f"cellhop: building image {self.name or ''}".rstrip(), file=sys.stderr)
        if not self._shown:
            return
        if self.widget is not None:
            self.widget.handle(event)
        elif kind == "step" and event.get("state") in ("building", "waiting", "failed"):
            title = (self._plan or {}).get("steps", [{}] * (event["index"] + 1))[event["index"]].get("title", "")
            print(f"=> Step {event['index']}: {title} [{event['state']}]", file=sys.stderr)


def build_for_use(control, image: Image, in_kernel: bool, force: bool = False) -> dict:
    """Build `image` (instant when cached), showing progress if it builds; its description.
    Its force_build steps rebuild on the first use of this Image object only (Image.build_spec): every
    %%remote cell builds its image, and a cell must not rebuild it each time."""
    info = control.build_image(image.build_spec(), on_event=BuildProgress(image.name, in_kernel), force=force)
    image.built()
    return info


def check_values(values: dict, info: dict, image: Image) -> list[str]:
    label = repr(image.name) if image.name else f"{info['key'][:12]}"
    return check_image_compat(values, info, label)

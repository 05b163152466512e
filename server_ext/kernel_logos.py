"""The launcher icon of a GPU kernel: a chip that says GPU and its type, not the plain Python logo.

JupyterLab's launcher shows a kernelspec's `logo-svg` (before `logo-64x64`).
Installed specs get the file written beside their kernel.json; the specs the
server generates per GPU type get a resource folder made on first use under
the runtime folder (`<jupyter runtime dir>/cellhop-kernel-logos/<name>/`: beside, not inside, the control
plane's own `cellhop/` folder, which only a control plane makes),
with ipykernel's PNG logos beside it for places that want a bitmap.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path

SVG_NAME = "logo-svg.svg"


def gpu_logo_svg(gpu_type: str) -> str:
    """A 64×64 chip with 'GPU' on it and the GPU type ('H100', 'A10G ×2') below."""
    label = html.escape(gpu_type[:10])
    size = 15 if len(gpu_type) <= 5 else 11
    pins = "".join(f'<rect x="{x}" y="2" width="4" height="8" rx="1"/><rect x="{x}" y="54" width="4" height="8" rx="1"/>'
                   for x in (16, 26, 36, 46))
    pins += "".join(f'<rect x="2" y="{y}" width="8" height="4" rx="1"/><rect x="54" y="{y}" width="8" height="4" rx="1"/>'
                    for y in (16, 26, 36, 46))
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        f'<title>GPU kernel: {label}</title>'
        f'<g fill="#5b6b2f">{pins}</g>'
        '<rect x="8" y="8" width="48" height="48" rx="6" fill="#76b900"/>'
        '<text x="32" y="31" text-anchor="middle" font-family="Helvetica, Arial, sans-serif" font-weight="700" '
        'font-size="17" fill="#ffffff">GPU</text>'
        f'<text x="32" y="48" text-anchor="middle" font-family="Helvetica, Arial, sans-serif" font-weight="600" '
        f'font-size="{size}" fill="#10210a">{label}</text>'
        '</svg>\n')


def write_logos(directory: Path, gpu_type: str) -> Path:
    """Put the GPU logo (and ipykernel's PNG logos) in `directory`; returns it."""
    from ipykernel.kernelspec import RESOURCES

    directory.mkdir(parents=True, exist_ok=True)
    for logo in Path(RESOURCES).glob("logo-*.png"):
        if not (directory / logo.name).exists():
            shutil.copy(logo, directory / logo.name)
    svg = gpu_logo_svg(gpu_type)
    path = directory / SVG_NAME
    if not path.exists() or path.read_text() != svg:
        tmp = directory / f".{SVG_NAME}.{os.getpid()}"
        tmp.write_text(svg)
        os.replace(tmp, path)
    return directory


def logo_folder(name: str, gpu_type: str) -> str:
    """The resource folder of the generated spec `name` (made on first use)."""
    from jupyter_core.paths import jupyter_runtime_dir

    safe = re.sub(r"[^a-z0-9._-]+", "-", name.lower())
    return str(write_logos(Path(jupyter_runtime_dir()) / "cellhop-kernel-logos" / safe, gpu_type))


def gpu_label(gpu: str) -> str:
    """'H100' -> 'H100'; 'H100:2' -> 'H100 ×2'; 'H100,A100-80GB' -> 'H100'… (the first choice)."""
    first = gpu.split(",")[0].strip()
    gpu_type, _, count = first.partition(":")
    return f"{gpu_type} ×{count}" if count and count != "1" else gpu_type

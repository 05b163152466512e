"""Kernelspecs for whole kernels on GPU containers ("Python 3 · H100" in the launcher).

- `kernelspec_dict(gpu, ...)` / `write_kernelspec(directory, ...)`: a kernelspec whose
  `metadata.kernel_provisioner` selects the `cellhop` provisioner (kernel/provisioner.py).
- `install_kernelspec(gpu, name, ...)`: installs one; `jupyter cellhop kernelspec install --gpu H100
  [--name N] [--user|--sys-prefix|--prefix P]` (server_ext/cli_kernelspec.py) calls it.
- `install_dynamic_kernelspecs(kernel_spec_manager, inventory)`: in a cellhop-enabled server, the
  kernel spec manager also lists one generated spec per GPU type of the control plane's inventory
  (and one for all the cards of a type that has several), never written to disk: they appear with
  the type and vanish with it.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

from ..errors import CellhopError
from .kernel_logos import gpu_label, logo_folder, write_logos

ARGV = ["-m", "cellhop.kernel.container_kernel", "-f", "{connection_file}"]


def default_name(gpu: str) -> str:
    """'H100' -> 'cellhop-h100', 'H100:2' -> 'cellhop-h100x2' (kernelspec names are [a-z0-9._-])."""
    text = gpu.strip().lower().replace(":", "x").replace(",", "-or-")
    return "cellhop-" + re.sub(r"[^a-z0-9._-]+", "-", text).strip("-")


def display_name(gpu: str, simulated: bool = False) -> str:
    """'H100' -> 'Python 3 · H100'; 'H100:2' -> 'Python 3 · H100 ×2'; simulated ones say so."""
    parts = []
    for choice in gpu.split(","):
        gpu_type, _, count = choice.strip().partition(":")
        parts.append(f"{gpu_type} ×{count}" if count and count != "1" else gpu_type)
    return f"Python 3 · {' or '.join(parts)}" + (" (simulated)" if simulated else "")


def _checked_gpu(gpu: str) -> str:
    from ..gpu_request import GpuRequest

    request = GpuRequest.parse(gpu)  # GpuRequestError names what is wrong
    if request.cpu_only:
        raise CellhopError(f"--gpu {gpu!r} asks for no GPU; a cellhop kernel needs one, e.g. --gpu H100")
    return str(request)


def kernelspec_dict(gpu: str, display: str | None = None, image: str | None = None, cpus: int | None = None,
                    memory: str | int | None = None, python: str | None = None, simulated: bool = False,
                    launch_timeout: float | None = None, volumes: list[str] | None = None,
                    secrets: list[str] | None = None) -> dict:
    """The kernel.json of a cellhop kernel for `gpu` ('H100', 'H100:2', 'H100,A100-80GB', 'any').

    `volumes` like ['datasets:/data', 'weights:/models:ro'], `secrets` secret names."""
    gpu = _checked_gpu(gpu)
    config = {"gpu": gpu, "image": image, "cpus": cpus, "memory": memory,
              "volumes": list(volumes or []), "secrets": list(secrets or [])}
    if launch_timeout is not None:
        config["launch_timeout"] = launch_timeout
    return {
        "argv": [python or sys.executable, *ARGV],
        "display_name": display or display_name(gpu, simulated),
        "language": "python",
        "interrupt_mode": "signal",
        "env": {},
        "metadata": {
            "debugger": False,
            "kernel_provisioner": {"provisioner_name": "cellhop", "config": config},
            "cellhop": {"gpu": gpu, "simulated": simulated},
        },
    }


def write_kernelspec(directory: str | Path, gpu: str, **options) -> Path:
    """Write a cellhop kernelspec folder (kernel.json, the GPU logo and the Python PNG logos) into `directory`."""
    import shutil

    from ipykernel.kernelspec import RESOURCES

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for logo in Path(RESOURCES).glob("logo-*"):
        shutil.copy(logo, directory / logo.name)
    write_logos(directory, gpu_label(_checked_gpu(gpu)))  # the launcher shows a GPU chip, not Python's logo
    (directory / "kernel.json").write_text(json.dumps(kernelspec_dict(gpu, **options), indent=1) + "\n")
    return directory


def install_kernelspec(gpu: str, name: str | None = None, user: bool = False, prefix: str | None = None,
                       **options) -> str:
    """Install a cellhop kernelspec the way `jupyter kernelspec install` does; returns where it went."""
    from jupyter_client.kernelspec import KernelSpecManager

    name = name or default_name(gpu)
    if not re.fullmatch(r"[a-z0-9._-]+", name, re.IGNORECASE):
        raise CellhopError(f"kernel name {name!r} may contain only letters, digits, '.', '_' and '-'")
    with tempfile.TemporaryDirectory() as tmp:
        source = write_kernelspec(Path(tmp) / name, gpu, **options)
        return KernelSpecManager().install_kernel_spec(str(source), name, user=user, prefix=prefix)


# -- generated specs in the server ----------------------------------------------------------
def generated_kernelspecs(inventory) -> dict:
    """name -> KernelSpec for each GPU type of `inventory`: one card, and all of them when there are several."""
    from jupyter_client.kernelspec import KernelSpec

    specs = {}
    for gpu_type, count in inventory.counts().items():
        for n in sorted({1, count}):
            gpu = gpu_type if n == 1 else f"{gpu_type}:{n}"
            spec = kernelspec_dict(gpu, simulated=inventory.simulated)
            name = default_name(gpu)
            specs[name] = KernelSpec(resource_dir=logo_folder(name, gpu_label(gpu)), **spec)
    return specs


class _GeneratedSpecs:
    """Mixed into the server's kernel spec manager class: on-disk specs, then the generated ones
    (a spec installed under the same name wins)."""

    cellhop_inventory = staticmethod(lambda: None)

    def _cellhop_generated(self) -> dict:
        try:
            inventory = self.cellhop_inventory()
            return generated_kernelspecs(inventory) if inventory is not None else {}
        except Exception:  # a broken inventory must not break the launcher
            self.log.warning("cellhop: generating GPU kernelspecs failed", exc_info=True)
            return {}

    def find_kernel_specs(self):
        found = super().find_kernel_specs()
        for name, spec in self._cellhop_generated().items():
            if name not in found and self._cellhop_allowed(name):
                found[name] = spec.resource_dir
        return found

    def _cellhop_allowed(self, name: str) -> bool:
        allowed = getattr(self, "allowed_kernelspecs", None)
        return not allowed or name in allowed

    def get_kernel_spec(self, kernel_name):
        from jupyter_client.kernelspec import NoSuchKernel

        try:
            return super().get_kernel_spec(kernel_name)
        except NoSuchKernel:
            spec = self._cellhop_generated().get(kernel_name.lower())
            if spec is None or not self._cellhop_allowed(kernel_name.lower()):
                raise
            return spec


def install_dynamic_kernelspecs(kernel_spec_manager, inventory_of) -> None:
    """Make `kernel_spec_manager` (any KernelSpecManager) also list the specs of `inventory_of()`'s GPUs."""
    if isinstance(kernel_spec_manager, _GeneratedSpecs):
        kernel_spec_manager.cellhop_inventory = inventory_of
        return
    base = type(kernel_spec_manager)
    kernel_spec_manager.__class__ = type(f"Cellhop{base.__name__}", (_GeneratedSpecs, base), {})
    kernel_spec_manager.cellhop_inventory = inventory_of

"""`%gpu` and `%%remote`: the notebook user's whole interface to cellhop."""

from __future__ import annotations

import argparse
import math

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, argument_group, magic_arguments, parse_argstring

from ..inventory import SIMULATED_HINT
from ..spec_rules import MAX_CPUS, MAX_SECONDS, SpecError, parse_memory
from .remote_cells import RemoteCells
from .remote_debug import post_mortem_on_error
from .run_spec import WORKDIR_MODES
from ..usage_text import describe_holder
from .volume import mounts_of


# Option types: a bad value is a usage error at once, and the notebook's settings stay as they were.
def _cpus(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CPUS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPU count; give a whole number from 1 to {MAX_CPUS}")
    return value


def _seconds(zero_ok: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        low_ok = value >= 0 if zero_ok else value > 0
        if not (math.isfinite(value) and low_ok and value <= MAX_SECONDS):
            least = "0 (never)" if zero_ok else "more than 0"
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds; give {least} up to "
                                             f"{MAX_SECONDS:.0f}")
        return value

    return parse


def _memory(text: str) -> str:
    try:
        parse_memory(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _resources(group_title: str):
    """Options shared by %gpu and %%remote (CPU count, memory, timeout)."""

    def decorate(func):
        for deco in reversed([
            argument_group(group_title),
            argument("--cpus", type=_cpus, default=None, help="CPUs the container may use."),
            argument("--memory", type=_memory, default=None,
                     help="Memory limit, e.g. 8G; past it the container is killed."),
            argument("--timeout", type=_seconds(zero_ok=False), default=None,
                     help="Seconds a cell may run before it is stopped."),
        ]):
            func = deco(func)
        return func

    return decorate


def _storage(group_title: str):
    """Options shared by %gpu and %%remote: volumes to mount and secrets to inject (both repeatable), and
    whether the notebook's folder is the working folder."""

    def decorate(func):
        for deco in reversed([
            argument_group(group_title),
            argument("--workdir", choices=WORKDIR_MODES, default=None,
                     help="The notebook's folder as the container's working folder, so relative paths are the "
                          "notebook's: rw (read-write, the default: where the server cannot bind the folder, "
                          "cells run without it and say so once), ro (read-only) or none (a private empty "
                          "folder; on a host whose server is not root, a first cell then claims a standby)."),
            argument("--volume", action="append", default=None, metavar="NAME:/PATH[:ro]",
                     help="Mount a cellhop volume (made on first use), e.g. datasets:/data or weights:/models:ro."),
            argument("--secret", action="append", default=None, metavar="NAME",
                     help="Put a secret's variables in the container's environment (masked in output)."),
        ]):
            func = deco(func)
        return func

    return decorate


def _with_cell_storage(d, args) -> dict:
    """%%remote's --volume/--secret added to the notebook's defaults (a cell's mount wins at the same path);
    its --workdir in place of %gpu's."""
    changes = {} if args.workdir is None else {"workdir": args.workdir}
    if args.volume:
        cell = mounts_of(args.volume)
        paths = {m["path"] for m in cell}
        changes["volumes"] = [{"name": n, "path": p, "read_only": ro} for n, p, ro in d.volumes
                              if p not in paths] + cell
    if args.secret:
        changes["secrets"] = [*d.secrets, *args.secret]
    return changes


def describe_standby(view: list[dict]) -> str:
    """'Standby: 1 of 1 ready for the default image (preloads numpy)', or '' when none are kept."""
    parts = []
    for entry in view:
        what = "the default image" if entry.get("image") is None else f"image {str(entry['image'])[:12]}"
        text = f"{entry.get('ready', 0)} of {entry.get('wanted', 0)} ready for {what}"
        if entry.get("starting"):
            text += f" ({entry['starting']} starting)"
        if entry.get("preload"):
            text += f", preloading {', '.join(entry['preload'])}"
        parts.append(text)
    return ("Standby containers (started, no GPU until a request claims one): " + "; ".join(parts)) if parts else ""


def idle_flags(control) -> dict[str, str]:
    """container id -> why it is flagged as an idle GPU holder, for this control plane's containers."""
    return {c["id"]: c["idle_holder"] for c in control.containers() if c.get("idle_holder")}


def inventory_table(cells: RemoteCells) -> str:
    control = cells.control
    inv = control.inventory()
    holders = control.holders()
    lines = []
    if inv.gpus:
        title = "GPUs (simulated: no real GPU behind these)" if inv.simulated else "GPUs"
        lines.append(title)
        flags = idle_flags(control) if any(w and "container" in w for w in holders.values()) else {}
        for g in inv.gpus:
            who = holders.get(g.uuid)
            state = "free" if not who else describe_holder(who, flags)
            sim = " simulated" if g.simulated else ""
            node = f" on node {g.node}" if getattr(g, "node", None) else ""
            lines.append(f"  [{g.index}] {g.type:<10} {g.memory_total / 2**30:6.0f} GiB{sim}{node}  {state}")
    else:
        lines.append(f"GPUs: none — {inv.reason or 'no GPU found'}. %%remote cells run in CPU-only containers. "
                     f"{SIMULATED_HINT}.")
    d = cells.defaults
    lines.append(f"Runtime: {control.runtime_description()}")
    standby = describe_standby(control.standby())
    if standby:
        lines.append(standby)
    extras = [f"cpus={d.cpus}" if d.cpus else "", f"memory={d.memory // 2**20}M" if d.memory else "",
              f"idle timeout {d.idle_timeout:g} s" if d.idle_timeout is not None else "",
              f"cell timeout {d.timeout:g} s" if d.timeout is not None else "",
              "volumes " + ", ".join(f"{n}:{p}" + (":ro" if ro else "") for n, p, ro in d.volumes) if d.volumes else "",
              "secrets " + ", ".join(d.secrets) if d.secrets else "",
              f"the notebook's folder as working folder ({d.workdir})" if d.workdir != "none" else ""]
    extras_text = ", ".join(e for e in extras if e)
    lines.append(f"Selected for %%remote: {d.gpu}" + (f" ({extras_text})" if extras_text else ""))
    return "\n".join(lines)


@magics_class
class CellhopMagics(Magics):
    def __init__(self, shell, cells: RemoteCells, kernel=None):
        super().__init__(shell)
        self.cells = cells
        self.kernel = kernel

    @magic_arguments()
    @argument("request", nargs="?", default=None,
              help="H100, H100:2, H100,A100-80GB (ordered fallback), any, or none (CPU only).")
    @_resources("resources")
    @argument("--idle-timeout", type=_seconds(zero_ok=True), default=None,
              help="Seconds this notebook's container may idle before it is stopped.")
    @argument("--image", default=None,
              help="A notebook variable holding a cellhop.Image for later %%%%remote cells ('default': none).")
    @argument("--keep-warm", type=int, default=None, metavar="N",
              help="Start the %%%%remote container now and keep it (N=1; %%%%remote cells share one) holding its "
                   "GPU while idle, never scaled down; 0 stops it when idle. It keeps the GPU from everyone else.")
    @_storage("volumes and secrets")
    @argument("--monitor", nargs="?", const=True, default=None, metavar="CONTAINER",
              help="Show live metrics (GpuMonitor) of the GPUs this notebook's containers hold "
                   "(all GPUs when they hold none); with a container id (or a unique prefix, as a "
                   "%%%%remote cell's status line gives it), of that container's GPUs alone.")
    @argument("--usage", action="store_true",
              help="This user's GPU-hours today and this month, their cost (c.Cellhop.gpu_prices), the monthly "
                   "budget, the per-user cap, and this user's idle GPU holders.")
    @argument("--terminal", nargs="?", const=True, default=None, metavar="CONTAINER",
              help="Open a JupyterLab terminal whose shell runs inside this notebook's %%%%remote container "
                   "(or the container with that id or unique prefix).")
    @line_magic
    def gpu(self, line: str = ""):
        """Show this host's GPUs, or choose the GPU for later %%remote cells."""
        args = parse_argstring(self.gpu, line)
        if args.terminal is not None:  # kernel/container_handle.py
            from .container_handle import terminal_for_notebook

            return terminal_for_notebook(self.cells, None if args.terminal is True else args.terminal)
        if args.monitor is not None:
            return self._monitor(None if args.monitor is True else args.monitor)
        if args.usage:
            from ..usage_text import usage_text

            print(usage_text(self.cells.control.usage()))
            return None
        changes = {k: v for k, v in (("cpus", args.cpus), ("memory", args.memory), ("timeout", args.timeout),
                                     ("idle_timeout", args.idle_timeout)) if v is not None}
        if args.image is not None:
            changes["image"] = self._image(args.image)
        if args.volume is not None:  # `--volume none` clears the defaults
            changes["volumes"] = [] if args.volume == ["none"] else args.volume
        if args.secret is not None:
            changes["secrets"] = [] if args.secret == ["none"] else args.secret
        if args.workdir is not None:
            changes["workdir"] = args.workdir
        if args.keep_warm is not None:
            if not 0 <= args.keep_warm <= 1:
                raise UsageError("--keep-warm takes 0 or 1: %%remote cells share one container "
                                 "(cellhop.remote(..., min_containers=N) keeps more for a function)")
            changes["keep_warm"] = args.keep_warm
        if args.request is not None or changes:
            self.cells.select(args.request, **changes)
        print(inventory_table(self.cells))
        if args.keep_warm is not None:
            self.cells.keep_warm()

    def _monitor(self, container: str | None = None):
        """A GpuMonitor of one container's GPUs (the view a %%remote status line offers), or of this
        notebook's containers' GPUs."""
        from ..widgets.gpu_monitor import GpuMonitor

        if container is not None:
            return GpuMonitor(control=self.cells.control, container=container)
        held = [g["uuid"] for s in list(self.cells.sessions.values()) if s.alive()
                for g in s.container.get("gpus") or []]
        monitor = GpuMonitor(control=self.cells.control, gpus=held or None)
        if held:
            monitor.title = "GPUs of this notebook's containers"
        return monitor

    @magic_arguments()
    @argument("--gpu", default=None, help="GPU request for this cell only (same syntax as %%gpu).")
    @argument("--image", default=None, help="A notebook variable holding a cellhop.Image to run this cell in.")
    @argument("--out", default=None, help="Names to bring back, comma-separated (default: all it assigned).")
    @argument("--no-pull", action="store_true", help="Bring no values back.")
    @argument("--pull", choices=("all", "safe"), default=None,
              help="What may come back: 'all', any object (unpickling it runs code the container chose, "
                   "here), or 'safe', data only (arrays, DataFrames, builtins); default c.Cellhop.pull.")
    @argument("--fresh", action="store_true", help="Run in a new container (the old one is stopped).")
    @argument("--async", dest="run_async", action="store_true",
              help="Return at once with a handle (status, wait(), cancel()).")
    @argument("--pdb", action="store_true",
              help="If the cell raises, enter the debugger in the container on its frames (prompting here).")
    @argument("--detach", action="store_true",
              help="Run it as a run the server owns (outlives this kernel): a cellhop.Run whose result() is the "
                   "dict of the variables the cell assigned.")
    @argument("--retries", type=int, default=None, metavar="N",
              help="Try a failed cell (or a dead container) again up to N times, with backoff.")
    @argument("--port", type=int, action="append", default=None, metavar="PORT",
              help="Show the link to this port of the container (proxied by Jupyter, cellhop.forward) first.")
    @_resources("resources for this cell")
    @_storage("volumes and secrets for this cell (added to %gpu's)")
    @cell_magic
    def remote(self, line: str, cell: str):
        """Run this cell in the notebook's GPU container; its new values come back."""
        args = parse_argstring(self.remote, line)
        if args.port:  # the link shows before the cell runs (a server it starts may block the cell)
            from .forward import forward_code

            cell = forward_code(args.port) + cell
        changes = {k: v for k, v in (("cpus", args.cpus), ("memory", args.memory),
                                     ("timeout", args.timeout)) if v is not None}
        if args.image is not None:
            changes["image"] = self._image(args.image)
        changes.update(_with_cell_storage(self.cells.defaults, args))
        d = self.cells.resolve(self.cells.defaults, args.gpu, **changes)
        out = [n.strip() for n in args.out.split(",") if n.strip()] if args.out else None
        kwargs = dict(out=out, pull=not args.no_pull, fresh=args.fresh, show_status=self.kernel is not None,
                      policy=args.pull)
        if args.detach:
            from .runs import detach_cell

            return detach_cell(self.cells, cell, d, args.retries)
        if args.run_async:
            return self.cells.run_cell_async(cell, d, **kwargs)
        if args.retries:
            from .runs import run_with_retries

            return run_with_retries(args.retries, lambda: self.cells.run_cell(cell, d, input_fn=self._input_fn(),
                                                                               **kwargs))
        # values land in the namespace; the last expression's value is the notebook cell's result (Out[n])
        with post_mortem_on_error(args.pdb):
            return self.cells.run_cell(cell, d, input_fn=self._input_fn(), **kwargs)

    def _image(self, name: str):
        """The Image a `--image NAME` names (None for 'default': the notebook's own environment)."""
        if name in ("default", "none"):
            return None
        from .image_use import image_named

        return image_named(self.shell, name)

    def _input_fn(self):
        kernel = self.kernel
        if kernel is None:
            return lambda prompt, password: input(prompt)
        if not getattr(kernel, "_allow_stdin", False):
            return None

        def ask(prompt: str, password: bool) -> str:
            return kernel.getpass(prompt) if password else kernel.raw_input(prompt)

        return ask


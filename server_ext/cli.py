"""The `cellhop` command (also `jupyter cellhop`).

`cellhop gpus` shows the inventory; `cellhop demo` opens the demo in JupyterLab;
`cellhop serve` (or plain `jupyter cellhop`) runs the control plane headless.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from ..control_address import CONTROL_URL_ENV
from ..demo import DEMO_SIMULATED, simulate_gpus_if_none
from ..inventory import SIMULATED_HINT

def _configured_simulated() -> str | None:
    """c.Cellhop.simulated_gpus from the Jupyter config files the server reads (cellhop gpus and the server agree)."""
    from .cli_storage import server_config
    from .config import Cellhop

    return Cellhop(config=server_config()).simulated_gpus or None


def _cmd_gpus(args) -> int:
    from .gpu_inventory import load_inventory

    inv = load_inventory(simulated=_configured_simulated())
    if args.json:
        print(json.dumps(inv.to_dict(), indent=2))
        return 0
    if not inv.gpus:
        print(f"No GPUs: {inv.reason}.\n{SIMULATED_HINT}.")
        return 0
    print("GPUs (simulated: no real GPU behind these)" if inv.simulated
          else f"GPUs (driver {inv.driver_version or '?'})")
    for g in inv.gpus:
        print(f"  [{g.index}] {g.type:<10} {g.memory_total / 2**30:6.0f} GiB  {g.name}  {g.uuid}")
    return 0


def _demo_notebook() -> Path:
    for base in (Path(__file__).resolve().parent.parent / "examples", Path(sys.prefix) / "share/cellhop/examples"):
        if (base / "demo.ipynb").exists():
            return base / "demo.ipynb"
    raise SystemExit("cellhop: the demo notebook (examples/demo.ipynb) was not found")


def _cmd_demo(args) -> int:
    env = dict(os.environ)
    env.pop(CONTROL_URL_ENV, None)  # the demo's server runs its own control plane
    said = simulate_gpus_if_none(env, configured=_configured_simulated())
    if said:
        print(f"cellhop: {said}")
    lab = shutil.which("jupyter")
    if lab is None:
        raise SystemExit("cellhop: JupyterLab is not installed; run: pip install 'cellhop[lab]'")
    notebook = _demo_notebook()
    if not os.access(notebook.parent, os.W_OK):  # a site-wide install: work on a copy the user owns
        copy = Path.home() / "cellhop-demo"
        copy.mkdir(exist_ok=True)
        if not (copy / notebook.name).exists():
            shutil.copy2(notebook, copy / notebook.name)
        notebook = copy / notebook.name
    os.chdir(notebook.parent)  # JupyterLab resolves the notebook argument against the working folder
    # The wheel enables the extension by a config file; naming it here also covers editable installs.
    argv = [lab, "lab", str(notebook.name), f"--ServerApp.root_dir={notebook.parent}",
            "--ServerApp.jpserver_extensions=cellhop=True"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    argv += args.lab_args
    os.execve(lab, argv, env)
    return 0


def _cmd_serve(args) -> int:
    from .app import CellhopApp

    # This process serves only the control plane API: no JupyterLab, no other extensions.
    CellhopApp.load_other_extensions = False
    CellhopApp.headless = True
    CellhopApp.launch_instance(argv=["--ServerApp.open_browser=False", *args.server_args])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cellhop", description="Run notebook cells on GPU containers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("gpus", help="show the GPUs cellhop schedules on this host")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_gpus)
    p = sub.add_parser("demo", help="open the demo notebook in JupyterLab")
    p.add_argument("lab_args", nargs=argparse.REMAINDER, help="extra arguments for jupyter lab")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("serve", help="run the control plane headless (REST and WebSocket API only)")
    p.add_argument("server_args", nargs=argparse.REMAINDER,
                   help="jupyter_server options, e.g. --port=8888 --ip=0.0.0.0 --IdentityProvider.token=...")
    p.set_defaults(func=_cmd_serve)
    from importlib import import_module

    for module in dict.fromkeys(_EXTRA_COMMANDS.values()):
        import_module(f"{__package__}.{module}").add_commands(sub)
    args, extra = parser.parse_known_args(argv)
    passthrough = {"demo": "lab_args", "serve": "server_args"}.get(args.command)
    if passthrough:  # options for jupyter (--port=...) go through as they are
        setattr(args, passthrough, [*getattr(args, passthrough), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)


def jupyter_main(argv: list[str] | None = None) -> int:
    """`jupyter cellhop [subcommand]`: with no subcommand (or only server options), `serve`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"gpus", "demo", "serve", "-h", "--help"} | set(_EXTRA_COMMANDS)
    if not argv or argv[0] not in commands:
        argv = ["serve", *argv]
    return main(argv)


# Subcommands other modules add: name -> module (in this package) whose add_commands(subparsers) adds it.
_EXTRA_COMMANDS: dict = {"volume": "cli_storage", "secret": "cli_storage", "kernelspec": "cli_kernelspec"}


if __name__ == "__main__":
    sys.exit(main())

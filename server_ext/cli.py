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


def demo_notebook(package_dir: Path, prefix: Path, home: Path) -> tuple[Path, str | None]:
    """The demo notebook to open, and a line to say about it. From a source checkout (an editable
    install) the checkout's own examples/demo.ipynb. From an installed wheel, the copy in the user's
    folder `home`/cellhop-demo (made from the one under `prefix`/share/cellhop/examples on first use
    and kept afterwards, so the user's edits stay theirs and never land inside the environment)."""
    checkout = package_dir.parent / "examples" / "demo.ipynb"
    if checkout.is_file():
        return checkout, None
    installed = prefix / "share" / "cellhop" / "examples" / "demo.ipynb"
    if not installed.is_file():
        raise SystemExit(f"cellhop: the demo notebook was not found (looked for {checkout} and {installed}); "
                         "reinstall cellhop (pip install 'cellhop[lab]')")
    copy = home / "cellhop-demo" / installed.name
    if copy.is_file():
        return copy, f"opening your copy of the demo, {copy} (delete it to start again from the installed one)"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(installed, copy)
    return copy, f"copied the demo to {copy}: your edits are saved there"


def _as_root(args: list[str]) -> list[str]:
    """Jupyter refuses to run as root without --allow-root; cellhop's containers never run as root
    (c.LocalRuntime.container_uid), so demo and serve pass it, and say so."""
    if os.geteuid() != 0 or any(a == "--allow-root" or a.startswith("--ServerApp.allow_root") for a in args):
        return []
    print("cellhop: running as root: passing --allow-root to Jupyter (containers still run as an "
          "unprivileged user)", file=sys.stderr)
    return ["--allow-root"]


def _cmd_demo(args) -> int:
    env = dict(os.environ)
    env.pop(CONTROL_URL_ENV, None)  # the demo's server runs its own control plane
    said = simulate_gpus_if_none(env, configured=_configured_simulated())
    if said:
        print(f"cellhop: {said}")
    from importlib.util import find_spec

    if find_spec("jupyterlab") is None:  # this environment's JupyterLab, whatever PATH says
        raise SystemExit("cellhop: JupyterLab is not installed here; run: pip install 'cellhop[lab]'")
    home = Path.home()
    if not os.access(home, os.W_OK):
        home = Path.cwd()
    notebook, note = demo_notebook(Path(__file__).resolve().parent.parent, Path(sys.prefix), home)
    if note:
        print(f"cellhop: {note}")
    os.chdir(notebook.parent)  # JupyterLab resolves the notebook argument against the working folder
    # The install enables the extension by a config file; naming it here too covers any other setup.
    argv = [sys.executable, "-m", "jupyterlab", str(notebook.name), f"--ServerApp.root_dir={notebook.parent}",
            "--ServerApp.jpserver_extensions=cellhop=True", *_as_root(args.lab_args), *args.lab_args]
    os.execve(sys.executable, argv, env)
    return 0


def _cmd_serve(args) -> int:
    from .app import CellhopApp

    # This process serves only the control plane API: no JupyterLab, no other extensions.
    CellhopApp.load_other_extensions = False
    CellhopApp.headless = True
    CellhopApp.launch_instance(argv=["--ServerApp.open_browser=False", *_as_root(args.server_args),
                                     *args.server_args])
    return 0


# Subcommands whose options all go to Jupyter as they are (`--port 8931` as well as `--port=8931`).
_PASSTHROUGH = {"demo": "lab_args", "serve": "server_args"}


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASSTHROUGH and not {"-h", "--help"} & set(argv[1:]):
        args = parser.parse_args(argv[:1])  # argparse would split `--port 8931` apart: it is Jupyter's
        setattr(args, _PASSTHROUGH[argv[0]], argv[1:])
    else:
        args = parser.parse_args(argv)
    return args.func(args)


def jupyter_main(argv: list[str] | None = None) -> int:
    """`jupyter cellhop [subcommand]`: with no subcommand (or only server options), `serve`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"gpus", "demo", "serve", "-h", "--help"} | set(_EXTRA_COMMANDS)
    if not argv or argv[0] not in commands:
        argv = ["serve", *argv]
    return main(argv)


# Subcommands other modules add: name -> module (in this package) whose add_commands(subparsers) adds it.
_EXTRA_COMMANDS: dict = {"volume": "cli_storage", "secret": "cli_storage", "kernelspec": "cli_kernelspec",
                         "doctor": "doctor", "host-setup": "cli_host_setup", "endpoint": "cli_endpoint",
                         "exec": "cli_exec", "shell": "cli_exec", "logs": "cli_exec",
                         "run": "cli_runs", "runs": "cli_runs", "schedule": "cli_runs", "schedules": "cli_runs",
                         "usage": "cli_usage"}


if __name__ == "__main__":
    sys.exit(main())

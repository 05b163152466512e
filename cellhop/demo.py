"""The demo's GPUs: on a host without any, the demo runs on a simulated inventory, and says so.

`cellhop demo` (for the JupyterLab server it starts) and the demo notebook's first cell (for the
control plane the kernel embeds when nbconvert or plain IPython runs it) both call
`simulate_gpus_if_none`, so both show the same GPUs and the same words.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from .control_address import CONTROL_URL_ENV
from .inventory import SIMULATED_ENV

DEMO_SIMULATED = "H100:2,A10G:1"


def simulate_gpus_if_none(environ: MutableMapping[str, str] | None = None, configured: str | None = None,
                          spec: str = DEMO_SIMULATED) -> str | None:
    """Set `SIMULATED_ENV=spec` in `environ` (default: this process's environment) when the control plane
    it is for will read this host's GPUs and finds none, and return the line that says so. None, and
    nothing set, where the GPUs are decided elsewhere: a cellhop server's (CELLHOP_CONTROL_URL), a
    simulated inventory already configured (`configured`: c.Cellhop.simulated_gpus, or the variable),
    or real GPUs."""
    environ = os.environ if environ is None else environ
    if environ.get(CONTROL_URL_ENV) or environ.get(SIMULATED_ENV, "").strip() or (configured or "").strip():
        return None
    from .server_ext.gpu_inventory import load_inventory

    inv = load_inventory(environ={})
    if inv.gpus:
        return None
    environ[SIMULATED_ENV] = spec
    return (f"This host has no GPU ({inv.reason}), so the demo uses a SIMULATED inventory ({spec}): "
            "the containers are real sandboxed processes, the GPUs are not, and everything that shows "
            "one says 'simulated'.")


def prepare_notebook() -> None:
    """The demo notebook's first cell. In a kernel without a cellhop server (nbconvert --execute, plain
    IPython): pick the simulated inventory where the host has no GPU, saying so, then load cellhop as
    `%load_ext cellhop` does. In a kernel a cellhop server started (JupyterLab), cellhop is loaded already
    and the server's GPUs are the ones used: nothing changes."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("prepare_notebook() runs in a notebook or IPython: there is no IPython shell here")
    configured = shell.config.Cellhop.get("simulated_gpus")
    line = simulate_gpus_if_none(configured=configured if isinstance(configured, str) else None)
    if line:
        print(line)
    shell.extension_manager.load_extension("cellhop")  # what %load_ext cellhop does, quiet if loaded

"""Who this notebook kernel is to the Jupyter server (for owners: "kernel 1a2b3c4d")."""

from __future__ import annotations

import os
import re


def server_kernel_id() -> str | None:
    """The id the Jupyter server knows this kernel by (its connection file is kernel-<id>.json), so
    that "kernel 1a2b3c4d" in a container's owner names the notebook session holding that kernel."""
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # not an ipykernel, or no connection file
        return None
    m = re.fullmatch(r"kernel-([0-9a-fA-F-]{8,})\.json", name)
    return m.group(1) if m else None

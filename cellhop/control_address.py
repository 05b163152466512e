"""Where a kernel finds the control plane of a cellhop server: two environment variables.

A cellhop-enabled jupyter_server puts them in the environment of each kernel it starts
(server_ext/kernel_launch.py); a kernel elsewhere sets both by hand to reach a `cellhop serve`.
The token is good for the cellhop API only. Without them a kernel embeds its own control plane.
"""

from __future__ import annotations

CONTROL_URL_ENV = "CELLHOP_CONTROL_URL"
CONTROL_TOKEN_ENV = "CELLHOP_CONTROL_TOKEN"

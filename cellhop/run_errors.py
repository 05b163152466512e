"""The errors of server-owned runs and schedules (detached runs, the REST job queue), shared by the
notebook's client and the server."""

from __future__ import annotations

from .errors import CellhopError

NEED_SERVER = ("detached runs, functions by name and schedules are owned by a Jupyter server with the cellhop "
               "extension, and this kernel runs its own control plane (plain IPython, or a kernel the server did "
               "not start). Open the notebook in JupyterLab on a server with cellhop, or set CELLHOP_CONTROL_URL "
               "and CELLHOP_CONTROL_TOKEN")


class RunNotFound(CellhopError):
    """No run (or schedule) of that id is known to the server (never made, or expired)."""

    http_status = 404


class RunsNeedServer(CellhopError):
    """Detached runs and schedules belong to a cellhop server; this kernel has none."""

    http_status = 501


class RunRefused(CellhopError):
    """The caller may not do that to this run or schedule."""

    http_status = 403


class RunFailed(CellhopError):
    """The run ended without a result (failed, cancelled or lost); the message says how."""

    http_status = 409


class RunNotDone(CellhopError):
    """The run has no result yet: it is queued or running."""

    http_status = 409

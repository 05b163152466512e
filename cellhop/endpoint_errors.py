"""The errors of endpoints (cellhop.endpoint), shared by the notebook's client and the server that serves them."""

from __future__ import annotations

from .errors import CellhopError

NEED_SERVER = ("endpoints are served by a Jupyter server with the cellhop extension, and this kernel runs its "
               "own control plane (plain IPython, or a kernel the server did not start). Open the notebook in "
               "JupyterLab on a server with cellhop, or set CELLHOP_CONTROL_URL and CELLHOP_CONTROL_TOKEN")


class EndpointNotFound(CellhopError):
    """No endpoint of that name is deployed."""

    http_status = 404


class EndpointsNeedServer(CellhopError):
    """Endpoints are served by a Jupyter server with cellhop; this kernel has none."""

    http_status = 501


class EndpointRefused(CellhopError):
    """The caller may not do that to this endpoint."""

    http_status = 403


class EndpointUnavailable(CellhopError):
    """No container could answer (it died twice, or none could start)."""

    http_status = 503


class EndpointBusy(CellhopError):
    """Too many requests wait for the endpoint's containers."""

    http_status = 429


class EndpointTimeout(CellhopError):
    """The endpoint's function ran past its timeout."""

    http_status = 504

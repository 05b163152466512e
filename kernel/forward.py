"""`cellhop.forward(port)`: the URL at which a server listening on `port` in this container is reached
through the Jupyter server (server_ext/api/proxy.py), behind its authentication.

Inside a container it knows its id (CELLHOP_CONTAINER_ID) and the Jupyter server's base URL path
(CELLHOP_PROXY_BASE, passed at launch without any token); the URL it gives is a path
(`/cellhop/proxy/<id>/<port>/`), which a link on a notebook page opens on the server the page came
from. `%%remote --port 6006` shows the same link from the notebook side (`forward_code`).
"""

from __future__ import annotations

import html
import os

PROXY_BASE_ENV = "CELLHOP_PROXY_BASE"
CONTAINER_ID_ENV = "CELLHOP_CONTAINER_ID"


class ProxyURL(str):
    """A proxied port's URL (a str); shown in a notebook as a link that opens it in a new tab."""

    port: int

    def __new__(cls, url: str, port: int):
        self = super().__new__(cls, url)
        self.port = port
        return self

    def __reduce__(self):  # travels back from a container as what it is
        return (ProxyURL, (str(self), self.port))

    def _repr_html_(self) -> str:
        url = html.escape(str(self), quote=True)
        return (f'<a href="{url}" target="_blank" rel="noopener">port {self.port} of this container: '
                f"{url}</a>")

    def _repr_pretty_(self, printer, cycle):
        printer.text(str(self))


def proxy_url(container_id: str, port: int, base: str = "/") -> ProxyURL:
    """The proxy URL of `port` in container `container_id` under the Jupyter server's base URL `base`."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port {port!r} is not a TCP port; give a number from 1 to 65535")
    base = base if base.endswith("/") else base + "/"
    return ProxyURL(f"{base}cellhop/proxy/{container_id}/{port}/", port)


def forward(port: int) -> ProxyURL:
    """The URL at which the server on `port` of this container is reached through Jupyter (a link in
    a notebook; printed when not under IPython). Only the notebook's user gets in there."""
    container_id = os.environ.get(CONTAINER_ID_ENV)
    base = os.environ.get(PROXY_BASE_ENV)
    if not container_id:
        raise RuntimeError("cellhop.forward(port) runs inside a cellhop container (a %%remote cell, a function "
                           "called with .remote, a GPU kernel); this process is not one")
    if base is None:
        raise RuntimeError("this container was not started by a Jupyter server with cellhop, so no proxy leads "
                           "to its ports; start it from a notebook of that server (%%remote)")
    url = proxy_url(container_id, port, base)
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is None:
        print(f"port {port} of this container: {url}", flush=True)
    return url


def show_forward(port: int) -> None:
    """Display the link to `port` now (what `%%remote --port` runs in the container before the cell)."""
    from IPython.display import display

    display(forward(port))


def forward_code(ports: list[int]) -> str:
    """The line `%%remote --port` puts before the cell: it shows each port's link, assigns nothing."""
    for port in ports:
        proxy_url("x", port)  # a bad port is the magic's error, before anything runs
    calls = "; ".join(f"__import__('cellhop.kernel.forward', fromlist=['show_forward']).show_forward({int(p)})"
                      for p in ports)
    return calls + "\n"

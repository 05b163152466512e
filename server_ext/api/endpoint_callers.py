"""Who may call an endpoint at `{base_url}cellhop/endpoints/{name}/`, over HTTP or WebSocket.

The Jupyter server's user (its token, password or login cookie), a kernel by its own token for the
endpoints it may call, a key of that endpoint (`Authorization: Bearer <key>`, which opens that endpoint
and nothing else of the server), or anyone for a `public=True` endpoint. A caller who may not call an
endpoint does not learn whether it exists either. And what of a request reaches an ASGI app: its
scope, without the Jupyter server's credentials.
"""

from __future__ import annotations

import json

from jupyter_server.auth import User
from jupyter_server.base.call_context import CallContext
from jupyter_server.utils import url_path_join
from tornado import web

from ...endpoint_errors import EndpointBusy
from ...errors import CellhopError, error_body, http_status
from ..endpoints_store import KEY_PREFIX
from ..port_relay import is_jupyter_cookie
from ..kernel_tokens import USER

ENDPOINTS_SETTING = "cellhop_endpoints"
ENDPOINT_PATH = r"/cellhop/endpoints/(?P<name>[^/]+)(?P<subpath>/.*)?"  # under the server's base_url
_KEY_USER = User(username="cellhop-endpoint-key", name="cellhop endpoint key")


class EndpointCallerAuth:
    """Mixin for the handlers of `cellhop/endpoints/` (with KernelTokenAuth and a JupyterHandler)."""

    _endpoint_key: str | None = None

    async def prepare(self) -> None:
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip().startswith(KEY_PREFIX):
            # an endpoint key: checked against the endpoint in _authorize; it is no Jupyter credential
            CallContext.set(CallContext.JUPYTER_HANDLER, self)
            if not self.check_host():
                raise web.HTTPError(403)
            self._endpoint_key = value.strip()
            self._token_authenticated = True
            self.current_user = self._jupyter_current_user = _KEY_USER
            return
        if self._prepare_kernel():
            return
        await super().prepare()

    def check_xsrf_cookie(self):
        if getattr(self, "_jupyter_current_user", None) is None:
            return None  # not authenticated: no ambient credential to forge (only a public endpoint answers)
        return super().check_xsrf_cookie()

    def _authorize(self, name: str) -> dict:
        endpoints = self.settings[ENDPOINTS_SETTING]
        try:
            record = endpoints.record(name)
        except CellhopError:  # a caller who may not call it does not learn whether it exists either
            if self._endpoint_key is None and (self._cellhop_kernel or self.current_user is not None):
                raise
            raise web.HTTPError(403, f"not authorized to call endpoint {name[:64]!r}") from None
        if self._endpoint_key is not None:
            caller = None
        elif self._cellhop_kernel:
            caller = self.caller
        elif self.current_user is not None and self.authorizer.is_authorized(self, self.current_user,
                                                                             "write", "cellhop"):
            caller = USER
        else:
            caller = None
        if not endpoints.may_call(record, caller, self._endpoint_key):
            raise web.HTTPError(403, f"not authorized to call endpoint {record['name']!r}: send the Jupyter "
                                     "server's token or `Authorization: Bearer <key>` with a key of this "
                                     "endpoint (`cellhop endpoint key NAME`)")
        return record

    def answer_error(self, exc: CellhopError) -> None:
        """Answer with a cellhop error as JSON, at its status; a busy endpoint also says when to retry."""
        if isinstance(exc, EndpointBusy):
            self.set_header("Retry-After", "1")
        self.set_status(http_status(exc))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(exc)))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, (CellhopError, ValueError)) and not self._finished:
            self.send_error(http_status(e), exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
               "proxy-authenticate", "proxy-connection"}
_NOT_FORWARDED = {"authorization", "cookie", "x-xsrftoken"}  # Jupyter's credentials stay with Jupyter


def add_app_headers(handler, headers) -> str | None:
    """An app's answer headers on `handler`'s answer, less hop-by-hop ones and less Set-Cookie of the Jupyter
    server's own cookies (an app in a container never sets the login or XSRF cookie of this server's origin,
    as through the ports proxy); its Content-Type is returned, not set."""
    login_cookie = handler.identity_provider.get_cookie_name(handler)
    content_type = None
    for key, value in headers:
        low = key.lower()
        if low == "content-type":
            content_type = value
        elif low == "set-cookie" and is_jupyter_cookie(value.split("=", 1)[0].strip(), login_cookie):
            continue
        elif low not in _HOP_BY_HOP:
            handler.add_header(key, value)
    return content_type


def asgi_scope(handler, name: str, subpath: str | None) -> dict:
    """An ASGI app's request, as the container rebuilds its scope (bytes travel as latin-1 text)."""
    request = handler.request
    root = url_path_join(handler.base_url, "cellhop", "endpoints", name)
    query = "&".join(part for part in request.query.split("&")
                     if part and not (handler.token_authenticated and part.startswith("token=")))
    host, _, port = request.host.rpartition(":")
    return {"scope": {"type": "http", "http_version": "1.1", "method": request.method, "scheme": request.protocol,
                      "path": subpath or "/", "root_path": root.rstrip("/"), "query_string": query,
                      "headers": [(k.lower(), v) for k, v in request.headers.get_all()
                                  if k.lower() not in _NOT_FORWARDED],
                      "client": [request.remote_ip, 0],
                      "server": [host or request.host, int(port) if port.isdigit() else 80]},
            "body": request.body or b""}

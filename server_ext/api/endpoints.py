"""REST: `endpoints` (GET list), `endpoints/{name}` (GET detail, PUT deploy, DELETE),
`endpoints/{name}/keys` (POST: a new key, shown once), `endpoints/{name}/logs` (GET);
the endpoints themselves are served at `{base_url}cellhop/endpoints/{name}/` (endpoint_calls.py,
endpoint_socket.py).

A deploy is `PUT endpoints/{name}?spec=<JSON>` with the function's cloudpickle bytes as the body
(application/octet-stream): the server stores them and never unpickles them.
"""

from __future__ import annotations


from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import CellhopAPIHandler, in_thread, parse_json
from .endpoint_callers import ENDPOINTS_SETTING

MAX_CODE_BYTES = 64 << 20
_NAME = r"(?P<name>[^/]+)"


class _EndpointsAPI(CellhopAPIHandler):
    @property
    def endpoints(self):
        return self.settings[ENDPOINTS_SETTING]


class EndpointsHandler(_EndpointsAPI):
    @web.authenticated
    @authorized
    async def get(self):
        self.endpoints.started()
        self.write_json({"endpoints": self.endpoints.list_view()})


class EndpointHandler(_EndpointsAPI):
    @web.authenticated
    @authorized
    async def get(self, name):
        self.write_json(self.endpoints.view(name))

    @web.authenticated
    @authorized
    async def put(self, name):
        code = self.request.body or b""
        if not code:
            raise web.HTTPError(400, "send the function's cloudpickle bytes as the body (cellhop.endpoint's "
                                     "deploy() does)")
        if len(code) > MAX_CODE_BYTES:
            raise web.HTTPError(413, f"the function is {len(code)} bytes pickled; an endpoint takes at most "
                                     f"{MAX_CODE_BYTES >> 20} MiB: load large data in the function from a volume")
        spec = parse_json(self.get_argument("spec", "{}"), "the spec parameter")
        self.write_json(await self.endpoints.deploy(name, code, spec, self.caller), status=201)

    @web.authenticated
    @authorized
    async def delete(self, name):
        self.write_json(await self.endpoints.delete(name, self.caller))


class EndpointKeysHandler(_EndpointsAPI):
    @web.authenticated
    @authorized
    async def post(self, name):
        key = await in_thread(self.endpoints.new_key, name, self.caller)
        self.write_json({"name": name, "key": key,
                         "use": "Authorization: Bearer <key>; it calls this endpoint and nothing else"}, 201)


class EndpointLogsHandler(_EndpointsAPI):
    @web.authenticated
    @authorized
    async def get(self, name):
        tail = self.get_argument("tail", "200")
        if not (tail.isascii() and tail.isdigit()) or not 1 <= int(tail) <= 100_000:
            raise web.HTTPError(400, "tail must be a whole number of lines from 1 to 100000")
        self.write_json(await in_thread(self.endpoints.logs, name, self.caller, int(tail)))


handlers = [
    (r"endpoints", EndpointsHandler),
    (rf"endpoints/{_NAME}", EndpointHandler),
    (rf"endpoints/{_NAME}/keys", EndpointKeysHandler),
    (rf"endpoints/{_NAME}/logs", EndpointLogsHandler),
]

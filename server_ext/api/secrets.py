"""REST: `secrets` (list, create) and `secrets/{name}` (its name and keys, delete).

Values go in (POST) and never come out: every answer carries names and keys
only, and bodies are never logged.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import CellhopAPIHandler, in_thread

_NAME = r"(?P<name>[^/]+)"


class SecretAPIHandler(CellhopAPIHandler):
    changes = "secret"  # the panel's list follows the event stream

    @property
    def secrets(self):
        return self.control_plane.secrets


class SecretsHandler(SecretAPIHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.write_json({"secrets": await in_thread(self.secrets.list)})

    @web.authenticated
    @authorized
    async def post(self):
        """`{"name", "values": {KEY: VALUE}, "replace": false, "session": false, "owner": null}`; 201 with
        name and keys.

        `session`: kept in the server's memory only, until it stops or the secret is deleted.
        A session secret made with a kernel's own token belongs to that kernel (as this server
        authenticated it, whatever the body says): only containers that kernel starts may use it.
        `owner` (session ones): `{"pid", "host", "label"}` of the process making it (as a container
        spec's owner_pid and owner_host): the secret goes when that process exits; it grants nothing."""
        body = self.json_body()
        unknown = set(body) - {"name", "values", "replace", "session", "owner"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(unknown))}; "
                                     "known: name, values, replace, session, owner")
        replace, session = body.get("replace", False), body.get("session", False)
        if not isinstance(replace, bool) or not isinstance(session, bool):
            raise web.HTTPError(400, "replace and session must be true or false")
        view = await in_thread(self.secrets.create, body.get("name"), body.get("values"), replace, session,
                               body.get("owner"), self.caller)
        self.write_json(view, status=201)


class SecretHandler(SecretAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, name):
        self.write_json(await in_thread(self.secrets.get, name))

    @web.authenticated
    @authorized
    async def delete(self, name):
        await in_thread(self.secrets.delete, name, self.caller)
        self.write_json({"name": name, "deleted": True})


handlers = [
    (r"secrets", SecretsHandler),
    (rf"secrets/{_NAME}", SecretHandler),
]

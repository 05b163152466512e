"""REST: `images`, `images/{key}`, `images/{key}/log`, `POST images` (build), `DELETE images/{key}`,
`POST images/prune`. Build progress also goes out on the event stream as `{"type": "image", ...}`."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...names import plain_text
from ...own_thread import on_own_thread
from .base import CellhopAPIHandler, JsonLinesStream, in_thread

_KEY = r"(?P<key>[^/]+)"


class _ImagesBase(CellhopAPIHandler):
    changes = "image"  # the panel's list follows the event stream

    @property
    def images(self):
        return self.control_plane.images


class ImagesHandler(JsonLinesStream, _ImagesBase):
    @web.authenticated
    @authorized
    async def get(self):
        """Every image built here, with its size on disk and last use."""
        self.write_json({"images": await in_thread(self.images.list)})

    @web.authenticated
    @authorized
    async def post(self):
        """Build an image: body `{"spec": Image.to_json(), "force": false}`; answers with the image
        (201), or with `?events=1` a stream of JSON lines: its build events, then
        `{"type": "built", "image": {...}}` or `{"type": "error", ...}`."""
        body = self.json_body()
        unknown = set(body) - {"spec", "force"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(unknown))}; "
                                     "send {\"spec\": {...}, \"force\": false}")
        if not isinstance(body.get("spec"), dict):
            raise web.HTTPError(400, "field 'spec' must be an image spec (cellhop.Image(...).to_json())")
        spec, force = body["spec"], bool(body.get("force", False))
        if spec.get("name") is not None:
            plain_text(spec["name"], "image name", max_chars=100)  # the one rule for names (names.py)
        if not self.wants_events():
            info = await on_own_thread(self.images.build, spec, None, force)
            self.write_json(info, status=201)
            return
        await self._build_streaming(spec, force)

    async def _build_streaming(self, spec: dict, force: bool) -> None:
        # A build goes on when its requester leaves: others may be waiting on the same layers.
        await self.stream_json_lines(lambda on_event: self.images.build(spec, on_event=on_event, force=force),
                                     lambda info: {"type": "built", "image": info})


class ImageHandler(_ImagesBase):
    @web.authenticated
    @authorized
    async def get(self, key):
        self.write_json(await in_thread(self.images.get, key))

    @web.authenticated
    @authorized
    async def delete(self, key):
        """Forget the image and remove the layers no other image uses; 409 while a container uses it."""
        self.write_json(await in_thread(self.images.delete, key))


class ImageLogHandler(_ImagesBase):
    @web.authenticated
    @authorized
    async def get(self, key):
        self.write_json({"key": key, "log": await in_thread(self.images.log, key)})


class ImagesPruneHandler(_ImagesBase):
    @web.authenticated
    @authorized
    async def post(self):
        """Remove unused layers; body `{"unused_for": seconds}` also removes images unused that long."""
        body = self.json_body()
        if set(body) - {"unused_for"}:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(set(body) - {'unused_for'}))}; "
                                     "send {\"unused_for\": seconds} or {}")
        unused_for = body.get("unused_for")
        if unused_for is not None and (not isinstance(unused_for, (int, float)) or isinstance(unused_for, bool)
                                       or unused_for < 0):
            raise web.HTTPError(400, "unused_for must be a number of seconds (>= 0) or null")
        self.write_json(await in_thread(self.images.prune, unused_for))


handlers = [
    (r"images", ImagesHandler),
    (r"images/prune", ImagesPruneHandler),
    (rf"images/{_KEY}", ImageHandler),
    (rf"images/{_KEY}/log", ImageLogHandler),
]

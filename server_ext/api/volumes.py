"""REST: `volumes`, `volumes/{name}` and its files (ls, upload, download, rm, mv, mkdir, usage).

Paths inside a volume travel in the `path` query argument and are read raw
(tornado's argument helpers would turn a NUL into a space), then checked by
volume_paths like every other interface. Uploads are streamed to a staging
file as they arrive (`@stream_request_body`; each chunk is written off the event loop), downloads
go out a MiB at a time with backpressure: a file of any size never sits in memory.
"""

from __future__ import annotations

import asyncio
import errno
from urllib.parse import quote

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from ...errors import CellhopError, VolumePathError
from ...sizes import CHUNK
from .base import AUTH_RESOURCE, CellhopAPIHandler, in_thread

_NAME = r"(?P<name>[^/]+)"
MAX_UPLOAD = 2**50  # the volume's quota is the real limit; this only lifts tornado's default


def _os_status(exc: OSError) -> tuple[int, str]:
    if isinstance(exc, FileNotFoundError):
        return 404, str(exc.strerror or exc)
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY):
        return 409, str(exc.strerror or exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507, "the disk holding the volume is full; free space on the host"
    if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL):
        return 400, str(exc.strerror or exc)
    return 500, ""


class VolumeAPIHandler(CellhopAPIHandler):
    """Volume errors carry their own status (404, 409, 413: cellhop/errors.py); OS errors are mapped, not 500s."""

    changes = "volume"  # the panel's list follows the event stream

    @property
    def volumes(self):
        return self.control_plane.volumes

    def path_argument(self, required: bool = True) -> str:
        """The raw `path` query argument (NUL and control characters kept, for volume_paths to refuse).
        Bytes that are not UTF-8 are kept as surrogate escapes (the bytes of a name a container made);
        listings give such names as `\\xNN` escapes, which volume_paths reads back too."""
        values = self.request.query_arguments.get("path")
        if not values:
            if required:
                raise VolumePathError("give the path inside the volume as ?path=...")
            return ""
        return values[-1].decode("utf-8", "surrogateescape")

    def flag(self, name: str) -> bool:
        return self.get_argument(name, "0") not in ("0", "", "false", "no")

    def _handle_request_exception(self, e: BaseException) -> None:
        if not self._finished:
            if isinstance(e, OSError) and not isinstance(e, CellhopError):
                status, message = _os_status(e)
                if status < 500 or status == 507:
                    self.send_error(status, exc_info=(web.HTTPError, web.HTTPError(status, message), None))
                    return
        super()._handle_request_exception(e)


class VolumesHandler(VolumeAPIHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.write_json({"volumes": await in_thread(self.volumes.list)})

    @web.authenticated
    @authorized
    async def post(self):
        """Create a volume: `{"name", "quota": "50G"|bytes|null}`; 201, or 200 when it exists."""
        body = self.json_body()
        unknown = set(body) - {"name", "quota"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(unknown))}; known: name, quota")
        name = body.get("name")
        existed = isinstance(name, str) and await in_thread(self.volumes.exists, name) if name else False
        info = await in_thread(self.volumes.create, name, body.get("quota"))
        self.write_json(info, status=200 if existed else 201)


class VolumeHandler(VolumeAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, name):
        self.write_json(await in_thread(self.volumes.info, name))

    @web.authenticated
    @authorized
    async def delete(self, name):
        """Delete the volume; 409 naming the containers while any mounts it."""
        await in_thread(self.volumes.delete, name)
        self.write_json({"name": name, "deleted": True})


class UsageHandler(VolumeAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, name):
        self.write_json(await in_thread(self.volumes.usage, name))


class FilesHandler(VolumeAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, name):
        """`?path=` (default: the root): the folder's entries, or the file's own entry."""
        entries = await in_thread(self.volumes.ls, name, self.path_argument(required=False))
        self.write_json({"entries": entries})

    @web.authenticated
    @authorized
    async def delete(self, name):
        """`?path=...&recursive=1`."""
        path = self.path_argument()
        await in_thread(self.volumes.rm, name, path, self.flag("recursive"))
        self.write_json({"path": path, "deleted": True})


class DownloadHandler(VolumeAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, name):
        """The file's bytes, streamed a MiB at a time."""
        f, size = await in_thread(self.volumes.open, name, self.path_argument())
        try:
            filename = self.path_argument().rsplit("/", 1)[-1]
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Length", str(size))
            quoted = quote(filename, errors="surrogateescape")
            self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quoted}")
            sent = 0
            while sent < size:
                chunk = await in_thread(f.read, min(CHUNK, size - sent))
                if not chunk:
                    break
                sent += len(chunk)
                self.write(chunk)
                await self.flush()  # backpressure: the next chunk waits until this one is sent
        except StreamClosedError:
            return
        finally:
            f.close()
        self.finish()


class PathBodyHandler(VolumeAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, name, action):
        body = self.json_body()
        if action == "mv":
            src, dst = body.get("src"), body.get("dst")
            if not isinstance(src, str) or not isinstance(dst, str):
                raise web.HTTPError(400, 'send {"src": "old/path", "dst": "new/path"}')
            self.write_json(await in_thread(self.volumes.mv, name, src, dst))
        else:
            path = body.get("path")
            if not isinstance(path, str):
                raise web.HTTPError(400, 'send {"path": "new/folder"}')
            self.write_json(await in_thread(self.volumes.mkdir, name, path), status=201)


@web.stream_request_body
class UploadHandler(VolumeAPIHandler):
    """`PUT volumes/{name}/upload?path=...`: the body is the file (any size; Content-Length or chunked).

    The file appears under its name only once the whole body arrived and was
    fsynced; a cut connection, a quota overrun or an error leaves the old file.
    """

    _upload = None
    _failed: BaseException | None = None
    _writing: asyncio.Future | None = None  # the chunk being written, on a worker thread

    async def prepare(self):
        await super().prepare()
        if self._finished or self.request.method != "PUT":
            return
        # The body streams in before put() runs, so authentication and authorization happen here.
        user = self.current_user
        if not user:
            raise web.HTTPError(403)
        # jupyter_server's authorizers may be async: a coroutine is truthy, so it must be awaited
        if not await ensure_async(self.authorizer.is_authorized(self, user, "write", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        length = self.request.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        name = self.path_kwargs.get("name")
        self._upload = await in_thread(self.volumes.upload, name, self.path_argument(), size)
        self.request.connection.set_max_body_size(MAX_UPLOAD)

    async def data_received(self, chunk: bytes) -> None:
        """Each chunk is written on a worker thread, off the event loop. Tornado reads the next
        chunk only once this one is written (it awaits data_received), so memory stays bounded."""
        if self._upload is None or self._failed is not None:
            return
        self._writing = asyncio.ensure_future(in_thread(self._upload.write, chunk))
        try:
            await self._writing
        except BaseException as exc:  # reported when the body ends (quota, disk full)
            self._failed = exc
        finally:
            self._writing = None

    @web.authenticated
    @authorized
    async def put(self, name):
        if self._failed is not None:
            raise self._failed
        entry = await in_thread(self._upload.commit)
        self.write_json(entry, status=201)

    def _abort(self) -> None:
        """Drop the staged bytes, once no chunk is being written (its thread owns the file meanwhile)."""
        upload = self._upload
        if upload is None:
            return
        writing = self._writing
        if writing is not None and not writing.done():
            writing.add_done_callback(lambda _: upload.abort())
        else:
            upload.abort()

    def on_connection_close(self):
        self._abort()  # a cut upload leaves nothing (and the previous version intact)
        super().on_connection_close()

    def on_finish(self):
        self._abort()  # no-op once committed


handlers = [
    (r"volumes", VolumesHandler),
    (rf"volumes/{_NAME}", VolumeHandler),
    (rf"volumes/{_NAME}/usage", UsageHandler),
    (rf"volumes/{_NAME}/files", FilesHandler),
    (rf"volumes/{_NAME}/download", DownloadHandler),
    (rf"volumes/{_NAME}/upload", UploadHandler),
    (rf"volumes/{_NAME}/(?P<action>mv|mkdir)", PathBodyHandler),
]

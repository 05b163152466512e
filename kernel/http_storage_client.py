"""Volumes and secrets of a cellhop server, over its REST API (see docs/api.md, "Volumes" and "Secrets").

Uploads stream from the file (or chunks) straight onto the socket, downloads
arrive chunk by chunk: a file of any size never sits in memory whole.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from urllib.parse import quote, urlencode

from ..errors import CellhopError, error_from_answer
from ..sizes import CHUNK
from .storage_client import StorageClient


class HttpStorageClient(StorageClient):
    """Volume and secret calls on the server an HttpControlPlane points at."""

    def __init__(self, control):
        self.control = control  # HttpControlPlane: its URL, token and connections

    # -- HTTP ----------------------------------------------------------------------
    def _target(self, path: str, query: dict | None = None) -> str:
        return self.control.base_path + path + (f"?{urlencode(query)}" if query else "")

    def _call(self, method: str, path: str, body: dict | None = None, query: dict | None = None):
        return self.control.request(method, path, body, query, not_found=None)

    @staticmethod
    def _vol(name: str) -> str:
        return "volumes/" + quote(name, safe="")

    # -- volumes -------------------------------------------------------------------
    def volume_create(self, name, quota=None):
        return self._call("POST", "volumes", {"name": name, "quota": quota})

    def volume_list(self):
        return self._call("GET", "volumes")["volumes"]

    def volume_info(self, name):
        return self._call("GET", self._vol(name))

    def volume_delete(self, name):
        self._call("DELETE", self._vol(name))

    def volume_ls(self, name, path=""):
        return self._call("GET", self._vol(name) + "/files", query={"path": path})["entries"]

    def volume_put(self, name, path, source, size=None):
        if isinstance(source, (bytes, bytearray, memoryview)):
            size, body = len(source), bytes(source)
        elif hasattr(source, "read"):
            body = source
        else:
            body = iter(source)
        headers = {**self.control._headers(False), "Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        conn = self.control._new_connection(None)
        conn.blocksize = CHUNK  # file bodies go out a MiB at a time
        try:
            try:
                conn.request("PUT", self._target(self._vol(name) + "/upload", {"path": path}), body=body,
                             headers=headers, encode_chunked=size is None)
                response = conn.getresponse()
                raw = response.read()
            except (BrokenPipeError, ConnectionResetError):
                # the server answered (an error) before taking the whole body
                response = conn.getresponse()
                raw = response.read()
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            raise CellhopError(f"uploading {path!r} to volume {name!r} failed ({exc}); nothing changed there") \
                from None
        finally:
            conn.close()
        if response.status >= 400:
            raise error_from_answer(response.status, raw)
        return json.loads(raw)

    def volume_read(self, name, path) -> Iterator[bytes]:
        conn = self.control._new_connection(None)
        try:
            conn.request("GET", self._target(self._vol(name) + "/download", {"path": path}),
                         headers=self.control._headers(False))
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise CellhopError(f"cannot reach the cellhop server at {self.control.url.netloc} ({exc})") from None
        if response.status >= 400:
            raw = response.read()
            conn.close()
            raise error_from_answer(response.status, raw)
        return self._chunks(conn, response)

    @staticmethod
    def _chunks(conn, response) -> Iterator[bytes]:
        try:
            while chunk := response.read(CHUNK):
                yield chunk
        finally:
            conn.close()

    def volume_rm(self, name, path, recursive=False):
        self._call("DELETE", self._vol(name) + "/files", query={"path": path, "recursive": int(recursive)})

    def volume_mv(self, name, src, dst):
        return self._call("POST", self._vol(name) + "/mv", {"src": src, "dst": dst})

    def volume_mkdir(self, name, path):
        return self._call("POST", self._vol(name) + "/mkdir", {"path": path})

    def volume_usage(self, name):
        return self._call("GET", self._vol(name) + "/usage")

    # -- secrets -------------------------------------------------------------------
    def secret_create(self, name, values, replace=False, session=False, owner=None):
        return self._call("POST", "secrets", {"name": name, "values": values, "replace": replace,
                                              "session": session, "owner": owner})

    def secret_list(self):
        return self._call("GET", "secrets")["secrets"]

    def secret_delete(self, name):
        self._call("DELETE", "secrets/" + quote(name, safe=""))

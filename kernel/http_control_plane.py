"""The control plane of a cellhop server, seen from a kernel: REST calls and the event stream.

Kernels started by a cellhop-enabled jupyter_server get CELLHOP_CONTROL_URL
and a token scoped to the cellhop API; a kernel elsewhere sets both by hand
to reach a `cellhop serve`. The data path (execute, output, values) never
goes through here: `start` hands back the container's connection info and
the kernel talks to the container directly.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from urllib.parse import urlencode, urlsplit

from ..container import ContainerSpec, ExitStatus
from ..errors import CellhopError, ContainerNotFound, answer_json, error_from_answer
from ..inventory import Inventory
from .control_plane_client import ControlPlaneClient

API = "cellhop/api/"
INVENTORY_TTL = 30.0  # the inventory changes only when the server restarts


class ControlPlaneUnreachable(CellhopError, ConnectionError):
    """The cellhop server could not be reached."""


class HttpControlPlane(ControlPlaneClient):
    """A `ControlPlaneClient` over the server's REST API and event stream."""

    def __init__(self, url: str, token: str, timeout: float = 30.0):
        parts = urlsplit(url if url.endswith("/") else url + "/")
        if parts.scheme not in ("http", "https"):
            raise CellhopError(f"CELLHOP_CONTROL_URL={url!r} must be an http:// or https:// URL")
        self.url = parts
        self.base_path = parts.path + API
        self._token = token
        self.timeout = timeout
        self._local = threading.local()
        self._inventory: tuple[float, dict] | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"HttpControlPlane({self.url.scheme}://{self.url.netloc}{self.url.path})"

    # -- HTTP ------------------------------------------------------------------
    def _headers(self, body: bool) -> dict:
        headers = {"Authorization": f"token {self._token}", "Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        return headers

    def _new_connection(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
        return cls(self.url.hostname, self.url.port, timeout=timeout)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._new_connection(self.timeout)
        return conn

    def request(self, method: str, path: str, body: dict | None = None, query: dict | None = None,
                not_found: type[CellhopError] | None = ContainerNotFound, raw: bytes | None = None) -> dict:
        """One JSON call on the cellhop API; on an error answer, the CellhopError the server raised
        (`not_found`: what a bare 404 means on this route; cellhop/errors.py, error_from_answer)."""
        target = self.base_path + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else raw  # raw: bytes as they are (a deploy)
        for attempt in (0, 1):  # a kept-alive connection the server closed is retried once
            conn = self._connection()
            try:
                conn.request(method, target, body=data, headers=self._headers(data is not None))
                response = conn.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise ControlPlaneUnreachable(
                        f"cannot reach the cellhop server at {self.url.netloc} ({exc}); is it running?") from None
        payload = answer_json(raw)
        if response.status >= 400:
            raise error_from_answer(response.status, payload, not_found)
        return payload

    def stream(self, method: str, path: str, body: dict | None = None, on_line=None,
               query: dict | None = None) -> dict:
        """Call a route that answers with JSON lines; `on_line` sees each, the last is returned.

        Interrupting (KeyboardInterrupt) closes the connection, which cancels the work on the server.
        """
        query = {**(query or {}), "events": "1"}
        conn = self._new_connection(None)
        try:
            data = json.dumps(body).encode() if body is not None else None
            try:
                conn.request(method, self.base_path + path + "?" + urlencode(query), body=data,
                             headers=self._headers(data is not None))
                response = conn.getresponse()
            except OSError as exc:
                raise ControlPlaneUnreachable(
                    f"cannot reach the cellhop server at {self.url.netloc} ({exc}); is it running?") from None
            if response.status >= 400:
                raise error_from_answer(response.status, response.read(), ContainerNotFound)
            last: dict = {}
            while True:
                line = response.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                last = json.loads(line)
                if on_line is not None:
                    on_line(last)
            if not last:
                raise ControlPlaneUnreachable("the cellhop server closed the stream without an answer")
            return last
        finally:
            conn.close()

    # -- ControlPlaneClient ----------------------------------------------------
    def _gpus_view(self, fresh: bool = False) -> dict:
        now = time.monotonic()
        if fresh or self._inventory is None or now - self._inventory[0] > INVENTORY_TTL:
            self._inventory = (now, self.request("GET", "gpus"))
        return self._inventory[1]

    def inventory(self) -> Inventory:
        return Inventory.from_dict(self._gpus_view())

    def holders(self) -> dict:
        return {g["uuid"]: g.get("holder") for g in self._gpus_view(fresh=True)["gpus"]}

    def runtime_description(self) -> str:
        return f"{self._gpus_view()['runtime']}, via the cellhop server at {self.url.netloc}"

    def standby(self) -> list[dict]:
        return list(self._gpus_view().get("standby") or [])

    def hint_preload(self, modules: list[str]) -> None:
        self.request("POST", "standby/preload", {"modules": list(modules)})

    def start(self, spec: ContainerSpec, on_event=None) -> dict:
        if spec.owner_pid is None:
            spec.owner_pid, spec.owner_host = os.getpid(), socket.gethostname()

        def on_line(event):
            if on_event is not None and event.get("type") == "container":
                on_event(event)

        final = self.stream("POST", "containers", {"spec": spec.to_json()}, on_line)
        if final.get("type") == "error":
            raise error_from_answer(final.get("status", 500), final, ContainerNotFound)
        return final["container"]

    def poll(self, container_id: str) -> ExitStatus | None:
        try:
            container = self.request("GET", f"containers/{container_id}")
        except ContainerNotFound:
            return ExitStatus(stopped=True, reason="the cellhop server no longer knows this container "
                                                   "(was the server restarted?)")
        return _exit_of(container)

    def stop(self, container_id: str, reason: str = "stopped on request") -> ExitStatus:
        try:
            container = self.request("POST", f"containers/{container_id}/stop", {"reason": reason})
        except ContainerNotFound:
            return ExitStatus(stopped=True, reason=reason)
        return _exit_of(container) or ExitStatus(stopped=True, reason=reason)

    def touch(self, container_id: str, idle_timeout=...) -> None:
        """Reset the idle timeout by hand (a kernel's own work resets it without this); with `idle_timeout`,
        change it (0: never idle-stopped; None: the control plane's default)."""
        self.request("POST", f"containers/{container_id}/touch",
                     {} if idle_timeout is ... else {"idle_timeout": idle_timeout})

    def interrupt(self, container_id: str) -> None:
        self.request("POST", f"containers/{container_id}/interrupt")

    def restart(self, container_id: str, on_event=None) -> dict:
        return self.request("POST", f"containers/{container_id}/restart")

    def logs(self, container_id: str, tail: int | None = None) -> str:
        return self.request("GET", f"containers/{container_id}/logs", query={"tail": tail} if tail else None)["log"]

    def containers(self) -> list[dict]:
        return self.request("GET", "containers")["containers"]

    def usage(self) -> dict:
        return self.request("GET", "usage")

    def subscribe(self, listener, metrics_interval: float | None = None, paused: bool = False):
        from .event_stream_client import EventStreamSubscription

        query = {"interval": metrics_interval or 60.0, "paused": "1" if paused or metrics_interval is None else "0"}
        scheme = "wss" if self.url.scheme == "https" else "ws"
        url = f"{scheme}://{self.url.netloc}{self.base_path}events?{urlencode(query)}"
        return EventStreamSubscription(url, {"Authorization": f"token {self._token}"}, listener,
                                       wants_metrics=metrics_interval is not None)

    def storage(self):
        from .http_storage_client import HttpStorageClient

        return HttpStorageClient(self)

    # -- images (server_ext/api/images.py) ------------------------------------------
    def build_image(self, image_spec_json: dict, on_event=None, force: bool = False) -> dict:
        def on_line(event):
            if on_event is not None and event.get("type") == "image":
                on_event(event)

        final = self.stream("POST", "images", {"spec": image_spec_json, "force": bool(force)}, on_line)
        if final.get("type") == "error":
            raise error_from_answer(final.get("status", 500), final)
        return final["image"]

    def images(self) -> list[dict]:
        return self.request("GET", "images")["images"]

    def image_log(self, key: str) -> str:
        return self.request("GET", f"images/{key}/log")["log"]

    def delete_image(self, key: str) -> dict:
        return self.request("DELETE", f"images/{key}")

    def prune_images(self, unused_for: float | None = None) -> dict:
        return self.request("POST", "images/prune", {"unused_for": unused_for})

    # -- endpoints (server_ext/api/endpoints.py) -------------------------------------------
    def deploy_endpoint(self, name: str, code: bytes, spec: dict) -> dict:
        from urllib.parse import quote

        from ..endpoint_errors import EndpointNotFound

        view = self.request("PUT", f"endpoints/{quote(name, safe='')}", query={"spec": json.dumps(spec)},
                            raw=code, not_found=EndpointNotFound)
        return {**view, "url": f"{self.url.scheme}://{self.url.netloc}{self.url.path}{view['path']}"}

    def endpoints(self) -> list[dict]:
        return self.request("GET", "endpoints")["endpoints"]

    def delete_endpoint(self, name: str) -> dict:
        from urllib.parse import quote

        from ..endpoint_errors import EndpointNotFound

        return self.request("DELETE", f"endpoints/{quote(name, safe='')}", not_found=EndpointNotFound)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


def _exit_of(container: dict) -> ExitStatus | None:
    exit_ = container.get("exit")
    if not exit_:
        return None
    return ExitStatus(code=exit_.get("code"), signal=exit_.get("signal"), oom=bool(exit_.get("oom")),
                      stopped=bool(exit_.get("stopped")),
                      reason=exit_.get("description", "") if exit_.get("stopped") else "")

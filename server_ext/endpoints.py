"""Deployed endpoints, owned by the server: stored under the state directory (endpoints_store.py),
served by autoscaled container pools (endpoints_pool.py) on the server's event loop, redeployed
lazily when the server starts again (a pool is made at the first request, or at once for an endpoint
with min_containers > 0).

Who may do what (the HTTP handlers ask `may_manage` and `may_call`):
- the server's user (jupyter_server's token, password or cookie): everything;
- a kernel, by its own token (kernel_tokens.py): deploy a new endpoint, and call, update, delete,
  read the logs of and make keys for the endpoints it deployed, no other;
- a per-endpoint key (`Authorization: Bearer <key>`): call that endpoint, nothing else;
- anyone, for an endpoint deployed with public=True: call it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

from ..container import ContainerSpec
from ..endpoint_concurrency import default_concurrency
from ..errors import CellhopError
from ..gpu_request import GpuRequest, feasible_choices
from ..endpoint_errors import EndpointNotFound, EndpointRefused
from .endpoints_pool import EndpointPool
from .endpoints_store import EndpointStore, endpoint_name, key_matches
from .kernel_tokens import Caller

log = logging.getLogger("cellhop")

TICK = 0.5  # seconds between two looks at idle containers
FIGURES_EVERY = 2  # ticks between two `endpoint` events (only those whose figures changed are sent)
_FIGURES = ("version", "containers", "starting", "queued", "in_flight", "requests", "errors", "retries",
            "requests_per_second", "p50_ms", "p95_ms")
_LIMITS = {"min_containers": (0, 64), "max_containers": (1, 64), "concurrency": (1, 4096)}


def check_spec(spec, inventory) -> dict:
    """The stored form of a deploy's spec; CellhopError (400) naming what is wrong."""
    if not isinstance(spec, dict):
        raise CellhopError("an endpoint's spec must be a JSON object")
    known = {"gpu", "min_containers", "max_containers", "concurrency", "scaledown", "timeout", "public",
             "cpus", "memory", "image", "generator", "async", "batch", "asgi", "volumes", "secrets"}
    unknown = set(spec) - known
    if unknown:
        raise CellhopError(f"unknown field(s) in the endpoint spec: {', '.join(sorted(unknown))}")
    out = {"gpu": str(spec.get("gpu") or "none")}
    request = GpuRequest.parse(out["gpu"])
    if not request.cpu_only:
        feasible_choices(request, inventory)  # GpuRequestError when this host can never give it
    defaults = {"min_containers": 0, "max_containers": 4, "concurrency": default_concurrency(spec.get("asgi") is True)}
    for name, (low, high) in _LIMITS.items():
        value = spec.get(name, defaults[name])
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise CellhopError(f"{name}={value!r}: give a whole number from {low} to {high}")
        out[name] = value
    if out["min_containers"] > out["max_containers"]:
        raise CellhopError(f"min_containers={out['min_containers']} is more than max_containers="
                           f"{out['max_containers']}")
    for name, default, allow_none in (("scaledown", 60.0, False), ("timeout", None, True)):
        value = spec.get(name, default)
        if value is None and allow_none:
            out[name] = None
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise CellhopError(f"{name}={value!r}: give a number of seconds above 0"
                               + (" (or None)" if allow_none else ""))
        out[name] = float(value)
    for name in ("public", "generator", "async", "asgi"):
        if not isinstance(spec.get(name, False), bool):
            raise CellhopError(f"{name} must be true or false")
        out[name] = spec.get(name, False)
    for name in ("cpus", "memory", "image"):
        out[name] = spec.get(name)
    batch = spec.get("batch")
    if batch is not None:
        if not isinstance(batch, dict) or set(batch) != {"max_batch_size", "wait_ms"}:
            raise CellhopError('batch must be {"max_batch_size": n, "wait_ms": ms}')
        if not isinstance(batch["max_batch_size"], int) or not 1 <= batch["max_batch_size"] <= 1024 or \
                not isinstance(batch["wait_ms"], (int, float)) or not 0 <= batch["wait_ms"] <= 10_000:
            raise CellhopError("batch: max_batch_size from 1 to 1024, wait_ms from 0 to 10000")
        if out["generator"] or out["asgi"]:
            raise CellhopError("a batched endpoint cannot be a generator or an ASGI app")
    out["batch"] = batch
    # cpus, memory, volumes and secrets as a container takes them (a bad one: the container's own 400)
    checked = ContainerSpec(gpu=out["gpu"], cpus=out["cpus"], memory=out["memory"],
                            volumes=spec.get("volumes") or [], secrets=spec.get("secrets") or [])
    out["volumes"], out["secrets"] = checked.volumes, checked.secrets
    return out


class Endpoints:
    """The endpoints of one control plane."""

    def __init__(self, control_plane, root: Path, queue_limit: int = 256):
        self.control_plane = control_plane
        self.manager = control_plane.manager
        self.store = EndpointStore(root)
        self.queue_limit = queue_limit
        self.pools: dict[str, EndpointPool] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ticker = None
        self._unsubscribe = None
        self._ticks = 0
        self._published: dict[str, dict] = {}  # name -> the figures last sent on the event stream

    def started(self) -> None:
        """On the server's loop: watch container deaths, tick, and keep the warm endpoints' containers."""
        if self.loop is not None:
            return
        self.loop = asyncio.get_running_loop()
        self._unsubscribe = self.manager.subscribe(self._on_container_event)
        self._ticker = self.loop.call_later(TICK, self._tick)
        for name in self.store.names():
            try:
                if self.store.load(name)["spec"]["min_containers"] > 0:
                    self.pool(name).scale()
            except Exception:  # noqa: BLE001 - one broken endpoint does not stop the others
                log.exception("cellhop: redeploying endpoint %s failed", name)

    def _on_container_event(self, event: dict) -> None:
        if event.get("phase") == "exited" and self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self._exited, event["id"])
            except RuntimeError:  # the loop closed
                pass

    def _exited(self, container_id: str) -> None:
        for pool in self.pools.values():
            pool.container_exited(container_id)

    def _tick(self) -> None:
        for pool in list(self.pools.values()):
            try:
                pool.tick()
            except Exception:  # noqa: BLE001
                log.exception("cellhop: endpoint %s: scaling failed", pool.name)
        self._ticks += 1
        if self._ticks % FIGURES_EVERY == 0:
            self._publish_figures()
        self._ticker = self.loop.call_later(TICK, self._tick)

    def figures(self, name: str) -> dict:
        """What the event stream and a panel show of an endpoint (its view without spec and owner)."""
        view = self.view(name)
        return {"name": view["name"], "path": view["path"], **{k: view[k] for k in _FIGURES},
                "containers": len(view["containers"])}

    def _publish_figures(self, names=None) -> None:
        """An `endpoint` event for each endpoint whose figures changed (`deleted` for one that went)."""
        for name in names if names is not None else list(self.pools):
            try:
                figures = self.figures(name)
            except EndpointNotFound:
                if self._published.pop(name, None) is not None:
                    self.control_plane.publish({"type": "endpoint", "name": name, "deleted": True})
                continue
            if self._published.get(name) != figures:
                self._published[name] = figures
                self.control_plane.publish({"type": "endpoint", "name": name, "endpoint": figures})

    # -- what the handlers call (on the loop) ---------------------------------------
    def pool(self, name: str) -> EndpointPool:
        self.started()
        pool = self.pools.get(name)
        if pool is None:
            record = self.store.load(name)
            pool = self.pools[name] = EndpointPool(record, self.store.code(name, record["version"]),
                                                   self.manager, self.queue_limit)
        return pool

    def record(self, name: str) -> dict:
        return self.store.load(endpoint_name(name))

    async def deploy(self, name: str, code: bytes, spec: dict, caller: Caller) -> dict:
        """Store a new version (off the loop), then hand it to the endpoint's pool (on the loop)."""
        self.started()
        name = endpoint_name(name)
        spec = check_spec(spec, self.manager.inventory)
        for secret in spec["secrets"]:  # it outlives the kernel: only stored secrets, never a session's
            if self.manager.storage.secrets.get(secret).get("session"):
                raise CellhopError(f"secret {secret!r} lives only as long as the notebook kernel that made it (a "
                                   "session secret); an endpoint outlives its kernel: store it with "
                                   f"cellhop.Secret.create({secret!r}, ...) and deploy again")

        def save() -> dict:
            try:
                old = self.store.load(name)
            except EndpointNotFound:
                old = None
            if old is not None:
                self.check_manage(old, caller, "update")
            return self.store.save(name, code, spec, caller.id)

        record = await asyncio.get_running_loop().run_in_executor(None, save)
        pool = self.pools.get(name)
        if pool is not None:
            pool.update(record, code)
        elif spec["min_containers"] > 0:
            self.pool(name).scale()
        log.info("cellhop: endpoint %s deployed (version %d) by %s", name, record["version"], caller.label)
        self._publish_figures([name])
        return self.view(name)

    async def delete(self, name: str, caller: Caller) -> dict:
        record = self.record(name)
        self.check_manage(record, caller, "delete")
        view = self.view(name)
        pool = self.pools.pop(record["name"], None)
        if pool is not None:
            pool.close(f"endpoint {name!r} was deleted")
        await asyncio.get_running_loop().run_in_executor(None, self.store.delete, record["name"])
        self._published[record["name"]] = {}  # so that the deletion is sent
        self._publish_figures([record["name"]])
        return view

    def new_key(self, name: str, caller: Caller) -> str:
        record = self.record(name)
        self.check_manage(record, caller, "make a key for")
        return self.store.new_key(record["name"])

    def logs(self, name: str, caller: Caller, tail: int | None = 200) -> dict:
        record = self.record(name)
        self.check_manage(record, caller, "read the logs of")
        pool = self.pools.get(record["name"])
        ids = [r.id for r in pool.replicas] if pool else []
        ids += [c.id for c in self.manager.list() if c.spec.owner == f"endpoint {record['name']}" and c.id not in ids]
        logs = {}
        for cid in ids:
            try:
                logs[cid] = self.manager.logs(cid, tail)
            except CellhopError:
                pass
        return {"name": record["name"], "logs": logs}

    @staticmethod
    def check_manage(record: dict, caller: Caller, what: str) -> None:
        if caller.kind == "kernel" and record.get("owner") != caller.id:
            raise EndpointRefused(f"endpoint {record['name']!r} was deployed by another caller; a kernel's token "
                                  f"may {what} only the endpoints that kernel deployed (use the server's token, "
                                  "e.g. `cellhop endpoint ...`)")

    def may_call(self, record: dict, caller: Caller | None, key: str | None) -> bool:
        """Whether a request may call the endpoint: its key, the server's user, its deploying kernel, public."""
        if key is not None and key_matches(record, key):
            return True
        if caller is not None and (caller.kind != "kernel" or record.get("owner") == caller.id):
            return True
        return bool(record["spec"].get("public"))

    def view(self, name: str) -> dict:
        record = self.record(name)
        pool = self.pools.get(record["name"])
        live = pool.view() if pool else {"containers": [], "starting": 0, "queued": 0, "in_flight": 0,
                                         "requests": 0, "errors": 0, "retries": 0, "requests_per_second": 0.0, "p50_ms": None,
                                         "p95_ms": None, "last_error": None}
        return {"name": record["name"], "version": record["version"], "path": f"cellhop/endpoints/{record['name']}/",
                "spec": record["spec"], "owner": record["owner"], "created": record["created"],
                "updated": record["updated"], "keys": len(record.get("keys", [])), **live}

    def list_view(self) -> list[dict]:
        views = []
        for name in self.store.names():
            try:
                views.append(self.view(name))
            except (EndpointNotFound, ValueError, KeyError):
                continue
        return views

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for pool in self.pools.values():
            pool.closed = True
            for replica in pool.replicas:
                replica.link.close()

"""One attempt of a run: a container (a warm one of the same owner and spec, or a new one through the
ContainerManager, which claims a standby where it can), the call over the kernel wire (endpoints_link's
KernelLink, the container's side named by reference: kernel/runs_container.py), its log, its end.

Containers of function runs that succeeded stay warm for c.Cellhop.run_keep_warm seconds for the next
run of the same owner and spec (the submit-to-start latency of a queued run is then a wire round trip).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..container import ContainerSpec, Phase
from ..own_thread import on_own_thread
from .endpoints_link import BadAnswer, KernelLink, LinkClosed, _ByName
from .kernel_tokens import Caller

log = logging.getLogger("cellhop")
RUN_IN_CONTAINER = _ByName("cellhop.kernel.runs_container", "run_in_container")
REUSABLE = ("call", "json")  # a cell or a notebook leaves state behind: their containers are not reused


class ContainerGone(Exception):
    """The run's container ended (died, was stopped) before the run did."""


def caller_of(owner: str) -> Caller:
    kind, _, name = owner.partition(":")
    return Caller(kind, name)


def container_spec(record: dict) -> ContainerSpec:
    spec = record["spec"]
    return ContainerSpec(gpu=spec.get("gpu") or "none", cpus=spec.get("cpus"), memory=spec.get("memory"),
                         image=spec.get("image"), volumes=spec.get("volumes") or [], secrets=spec.get("secrets") or [],
                         idle_timeout=0, owner=f"run {record['id']}", label=f"run {record['name']}",
                         caller=caller_of(record["owner"]))


def reuse_key(record: dict) -> str | None:
    import json

    if record["exec"] not in REUSABLE:
        return None
    return json.dumps([record["owner"], record["spec"]], sort_keys=True)


class Warm:
    """A container kept between runs."""

    def __init__(self, container, link: KernelLink):
        self.container, self.link = container, link
        self.since = time.monotonic()


class Containers:
    """The containers runs are using or keep warm, on the server's loop."""

    def __init__(self, manager, keep_warm: float):
        self.manager = manager
        self.keep_warm = keep_warm
        self.idle: dict[str, list[Warm]] = {}
        self.links: dict[str, KernelLink] = {}  # container id -> the link of a run using it

    async def acquire(self, record: dict, cancelled) -> Warm:
        key = reuse_key(record)
        while key and self.idle.get(key):
            warm = self.idle[key].pop()
            if warm.container.phase == Phase.READY and not warm.link.closed:
                self.links[warm.container.id] = warm.link
                return warm
        container = await on_own_thread(self.manager.start, container_spec(record), None, cancelled)
        link = KernelLink(container.connection_info)
        self.links[container.id] = link
        return Warm(container, link)

    async def call(self, warm: Warm, record: dict, code: bytes, args, limit: int, timeout: float | None):
        """The container's answer: (ok, pickled, json text, error); ContainerGone if it ended first."""
        call = warm.link.call(RUN_IN_CONTAINER, (record["exec"], code, args, limit))
        try:
            return await (asyncio.wait_for(call, timeout) if timeout else call)
        except (LinkClosed, BadAnswer) as exc:
            raise ContainerGone(str(exc)) from None

    def logs(self, container_id: str) -> str:
        try:
            return self.manager.logs(container_id)
        except Exception:  # noqa: BLE001 - forgotten already
            return ""

    async def release(self, warm: Warm, record: dict, reusable: bool, reason: str) -> None:
        self.links.pop(warm.container.id, None)
        key = reuse_key(record)
        if reusable and key and self.keep_warm > 0 and warm.container.phase == Phase.READY and not warm.link.closed:
            warm.since = time.monotonic()
            self.idle.setdefault(key, []).append(warm)
            return
        await self.stop(warm, reason)

    async def stop(self, warm: Warm, reason: str) -> None:
        warm.link.close()
        self.links.pop(warm.container.id, None)
        try:
            await on_own_thread(self.manager.stop, warm.container.id, reason)
        except Exception as exc:  # noqa: BLE001 - gone already
            log.debug("cellhop: stopping run container %s: %s", warm.container.id, exc)

    def exited(self, container_id: str) -> None:
        link = self.links.pop(container_id, None)
        if link is not None:
            link.close(LinkClosed(f"container {container_id} ended"))
        for key, warms in list(self.idle.items()):
            self.idle[key] = [w for w in warms if w.container.id != container_id]

    def tick(self) -> None:
        now = time.monotonic()
        for key, warms in list(self.idle.items()):
            for warm in [w for w in warms if now - w.since > self.keep_warm]:
                warms.remove(warm)
                asyncio.ensure_future(self.stop(warm, f"idle {self.keep_warm:g} s after its run "
                                                      "(c.Cellhop.run_keep_warm)"))
            if not warms:
                del self.idle[key]

    def close(self) -> None:
        for warms in self.idle.values():
            for warm in warms:
                warm.link.close()
        for link in self.links.values():
            link.close()

"""The containers of one endpoint, autoscaled, on the server's event loop (all state is the loop's).

- A request takes the least loaded container of the current version with fewer than `concurrency`
  requests in flight; when there is none it waits in the queue, and a container starts (through the
  ContainerManager, which claims a standby where it can) while the queue outgrows what the starting
  ones will take, up to `max_containers`. Beyond c.Cellhop.endpoint_queue_limit waiting: 429.
- A container idle `scaledown` seconds stops, down to `min_containers` (kept warm from the start).
- A request whose container dies is tried once more on another (a fresh one if none is left); then
  503. `timeout` seconds without an answer: 504, and the container's kernel is interrupted.
- A new version (`update`): new requests wait for containers of the new version; the old ones finish
  what they hold, then stop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque

from ..container import ContainerSpec, Phase
from ..endpoint_errors import EndpointBusy, EndpointTimeout, EndpointUnavailable
from ..own_thread import on_own_thread
from .endpoints_link import SERVE_CALL as serve_call
from .endpoints_link import BadAnswer, KernelLink, LinkClosed
from .kernel_tokens import Caller

log = logging.getLogger("cellhop")

_CALL_IDS = itertools.count(1)  # names a call on a thread or the loop of its container, for its cancel
START_RETRY = 10.0  # seconds before a pool keeping min_containers warm tries again after a failed start


class Replica:
    def __init__(self, container, link: KernelLink, version: int):
        self.container, self.link, self.version = container, link, version
        self.id = container.id
        self.inflight = 0
        self.served = 0
        self.idle_since = time.monotonic()
        self.loaded = False  # the container answered a request (its code is there)
        self.draining = False

    def view(self) -> dict:
        return {"id": self.id, "version": self.version, "in_flight": self.inflight, "served": self.served,
                "draining": self.draining, "gpus": [g.to_dict() for g in self.container.gpus],
                "claimed_from": self.container.claimed_from}


class Stream:
    """A generator's items (or an ASGI response's body), read from the container that holds it (which stays
    held until the end). An ASGI response's `head` is (status, headers, the body's first part)."""

    def __init__(self, pool: EndpointPool, replica: Replica, stream_id: int, head: tuple | None = None):
        self.pool, self.replica, self.stream_id, self.head = pool, replica, stream_id, head

    async def chunks(self):
        done = False
        try:
            while not done:
                try:
                    _, _, text, done = await self.replica.link.call(
                        serve_call, ("next", self.pool.key, None, self.stream_id, self.pool.threads()), waits=True)
                except (LinkClosed, BadAnswer) as exc:
                    self.pool.errors += 1
                    yield _error_line("ContainerDied", f"the endpoint's container ended mid-stream ({exc})")
                    return
                if text:
                    yield text
        finally:
            if not done and not self.replica.link.closed:
                asyncio.ensure_future(self._close())
            self.pool.release(self.replica)

    async def _close(self):
        try:
            await self.replica.link.call(serve_call, ("close", self.pool.key, None, self.stream_id))
        except Exception:  # noqa: BLE001 - the container went meanwhile
            pass


class Socket:
    """A WebSocket of an ASGI app, kept in the container that accepted it (which stays held, one of its
    `concurrency` places, until it closes). `subprotocol` and `headers` are what the app accepted with."""

    def __init__(self, pool: EndpointPool, replica: Replica, socket_id: int, subprotocol, headers):
        self.pool, self.replica, self.socket_id = pool, replica, socket_id
        self.subprotocol, self.headers = subprotocol, headers
        self.released = False

    async def receive(self) -> list:
        """The app's next messages (at least one): ("text", str), ("bytes", bytes), ("close", code, reason).
        Raises LinkClosed or BadAnswer when the container ended."""
        answer = await self.replica.link.call(serve_call, ("ws-recv", self.pool.key, None, [self.socket_id]),
                                              waits=True)
        return [("close", 1000, "")] if answer == ("ws-ended",) else list(answer)

    async def send(self, kind: str, data) -> bool:
        """Give the app a message of the caller ("text" or "bytes"), once it has room; False: it ended."""
        answer = await self.replica.link.call(serve_call, ("ws-send", self.pool.key, None,
                                                           [self.socket_id, kind, data]), waits=True)
        return answer == ("ok",)

    async def close(self, code: int | None) -> None:
        """The caller went away (`code` of its close frame, None without one): the app hears a disconnect;
        the container's place is free again."""
        if self.released:
            return
        self.released = True
        try:
            if not self.replica.link.closed:
                await self.replica.link.call(serve_call, ("ws-close", self.pool.key, None,
                                                          [self.socket_id, code or 1005]))
        except Exception:  # noqa: BLE001 - the container went meanwhile
            pass
        finally:
            self.pool.release(self.replica)


def _error_line(kind: str, message: str) -> str:
    import json

    return json.dumps({"error": kind, "message": message}) + "\n"


class EndpointPool:
    """One endpoint's containers. `record` is the stored endpoint (endpoints_store); `code` its bytes."""

    def __init__(self, record: dict, code: bytes, manager, queue_limit: int):
        self.manager = manager
        self.queue_limit = queue_limit
        self.replicas: list[Replica] = []
        self.starting = 0
        self.waiters: deque[asyncio.Future] = deque()
        self.closed = False
        self.last_error: str | None = None
        self._failed_at = 0.0  # when a container last failed to start (min_containers retries wait a while)
        self.requests = self.errors = self.retries = 0
        self.latencies: deque[tuple[float, float]] = deque(maxlen=2000)
        self._batch: list[tuple[dict, asyncio.Future]] = []
        self._batch_timer = None
        self._set(record, code)

    def _set(self, record: dict, code: bytes) -> None:
        self.record, self.code = record, code
        self.name, self.version, self.spec = record["name"], record["version"], record["spec"]
        self.key = f"{self.name}@{self.version}"

    # -- views ----------------------------------------------------------------------
    def view(self) -> dict:
        now = time.monotonic()
        recent = sorted(s for t, s in self.latencies if now - t < 60)
        pick = (lambda q: round(recent[min(len(recent) - 1, int(q * len(recent)))] * 1000, 2)) if recent else \
            (lambda q: None)
        return {"containers": [r.view() for r in self.replicas], "starting": self.starting,
                "queued": len(self.waiters), "in_flight": sum(r.inflight for r in self.replicas),
                "requests": self.requests, "errors": self.errors, "retries": self.retries,
                "requests_per_second": round(sum(1 for t, _ in self.latencies if now - t < 10) / 10, 2),
                "p50_ms": pick(0.5), "p95_ms": pick(0.95), "last_error": self.last_error}

    # -- calls ----------------------------------------------------------------------
    async def call(self, kwargs: dict, op: str = "call"):
        """(status, JSON text), a Stream for a generator, or for an ASGI app (`op` "asgi", `kwargs` its scope
        and body) ("asgi", status, headers, body); for a WebSocket (`op` "ws-open", `kwargs` its scope) a
        Socket, or ("ws", None, "close", code, reason) where the app refused it. Raises
        EndpointBusy/Unavailable/Timeout."""
        self.requests += 1
        start = time.monotonic()
        try:
            if self.spec.get("batch"):
                status, text = await self._batched(kwargs)
                self.errors += status >= 500
                return status, text
            for attempt in (0, 1):
                replica = await self._acquire()
                keep = False
                try:
                    answer = await self._send(replica, op, kwargs)
                    if answer[0] == "stream":
                        keep = True
                        return Stream(self, replica, answer[1])
                    if answer[0] == "asgi-stream":
                        keep = True
                        return Stream(self, replica, answer[1], head=answer[2:])
                    if answer[0] == "asgi":
                        self.errors += answer[1] >= 500
                        return answer
                    if answer[0] == "ws":  # a WebSocket the app accepted, or ("ws", None, "close", ...)
                        keep = answer[1] is not None
                        return Socket(self, replica, answer[1], answer[3], answer[4]) if keep else answer
                    self.errors += answer[1] >= 500  # the function raised, or returned what is not JSON
                    return answer[1], answer[2]
                except (LinkClosed, BadAnswer) as exc:
                    self._lost(replica, exc)
                    self.retries += 1 - attempt
                    if attempt:
                        raise EndpointUnavailable(f"endpoint {self.name!r}: the container serving the request "
                                                  f"ended before answering, twice ({exc}); try again") from None
                finally:
                    if not keep:
                        self.release(replica)
        except asyncio.CancelledError:  # its caller went away
            raise
        except BaseException:
            self.errors += 1
            raise
        finally:
            self.latencies.append((time.monotonic(), time.monotonic() - start))

    def threads(self) -> int:
        """A function endpoint deployed with concurrency > 1 runs its calls on that many threads of its
        container (kernel/endpoint_threads.py); 0: on the kernel's main thread, one at a time."""
        concurrency = self.spec["concurrency"]
        return 0 if self.spec.get("asgi") or concurrency <= 1 else concurrency

    async def _send(self, replica: Replica, op: str, payload):
        # The code goes with every request until one was answered: requests on the shell and on the lean
        # channel may reach the kernel in another order than they left.
        args = (op, self.key, None if replica.loaded else self.code, payload)
        threads = self.threads() if op in ("call", "batch") else 0
        # a call on a thread or on the container's event loop (an async function) is stopped by its id
        cancellable = bool(threads) or (self.spec.get("async") is True and op in ("call", "batch"))
        call_id = next(_CALL_IDS)
        if cancellable:
            args += (threads, call_id)
        call = replica.link.call(serve_call, args)
        timeout = self.spec.get("timeout")
        try:
            answer = await (asyncio.wait_for(call, timeout) if timeout else call)
            replica.loaded = True
            return answer
        except asyncio.TimeoutError:
            if cancellable:  # stop that call alone, not the kernel's main thread, which serves the others
                asyncio.ensure_future(self._cancel(replica, call_id))
            else:
                replica.link.interrupt()
            raise EndpointTimeout(f"endpoint {self.name!r} did not answer within its timeout of {timeout:g} s "
                                  "(its call was interrupted); raise timeout= in @cellhop.endpoint") from None

    async def _cancel(self, replica: Replica, call_id: int) -> None:
        try:
            await replica.link.call(serve_call, ("cancel", self.key, None, call_id))
        except (LinkClosed, BadAnswer):  # the container went meanwhile, and the call with it
            pass

    async def _batched(self, kwargs: dict):
        future = asyncio.get_running_loop().create_future()
        self._batch.append((kwargs, future))
        batch = self.spec["batch"]
        if len(self._batch) >= batch["max_batch_size"]:
            self._flush()
        elif self._batch_timer is None:
            self._batch_timer = asyncio.get_running_loop().call_later(batch["wait_ms"] / 1000, self._flush)
        return await future

    def _flush(self) -> None:
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        batch, self._batch = self._batch, []
        if batch:
            asyncio.ensure_future(self._run_batch(batch))

    async def _run_batch(self, batch: list) -> None:
        try:
            for attempt in (0, 1):
                replica = await self._acquire()
                try:
                    answers = await self._send(replica, "batch", [kwargs for kwargs, _ in batch])
                    for (_, future), answer in zip(batch, answers):
                        if not future.done():
                            future.set_result((answer[1], answer[2]))
                    return
                except (LinkClosed, BadAnswer) as exc:
                    self._lost(replica, exc)
                    if attempt:
                        raise EndpointUnavailable(f"endpoint {self.name!r}: the container serving the batch "
                                                  f"ended before answering, twice ({exc}); try again") from None
                finally:
                    self.release(replica)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)

    # -- containers -----------------------------------------------------------------
    def _current(self) -> list[Replica]:
        return [r for r in self.replicas if r.version == self.version and not r.draining]

    async def _acquire(self) -> Replica:
        while True:
            if self.closed:
                raise EndpointUnavailable(f"endpoint {self.name!r} was deleted")
            free = [r for r in self._current() if r.inflight < self.spec["concurrency"]]
            if free:
                replica = min(free, key=lambda r: r.inflight)
                replica.inflight += 1
                return replica
            if len(self.waiters) >= self.queue_limit:
                raise EndpointBusy(f"endpoint {self.name!r} has {len(self.waiters)} requests waiting; retry later")
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            self.scale()
            try:
                await waiter
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)

    def release(self, replica: Replica) -> None:
        replica.inflight -= 1
        replica.served += 1
        if replica.inflight == 0:
            replica.idle_since = time.monotonic()
            if replica.draining or replica.version != self.version:
                self._stop(replica, f"endpoint {self.name!r} was updated to version {self.version}")
        self._wake()

    def _wake(self, exc: BaseException | None = None) -> None:
        for waiter in list(self.waiters):
            if not waiter.done():
                waiter.set_exception(exc) if exc is not None else waiter.set_result(None)

    def scale(self) -> None:
        """Start containers for the queue (and up to min_containers), within max_containers."""
        if self.closed:
            return
        spec = self.spec
        while True:
            live = len(self._current()) + self.starting
            coming = self.starting * spec["concurrency"]
            if live >= spec["max_containers"]:
                return
            if live >= spec["min_containers"] and len(self.waiters) <= coming:
                return
            if not self.waiters and time.monotonic() - self._failed_at < START_RETRY:
                return  # keeping min_containers warm: not again right after a failed start
            self.starting += 1
            asyncio.ensure_future(self._start(self.version))

    def container_spec(self) -> ContainerSpec:
        spec = self.spec
        return ContainerSpec(gpu=spec["gpu"], cpus=spec.get("cpus"), memory=spec.get("memory"),
                             image=spec.get("image"), volumes=spec.get("volumes") or [],
                             secrets=spec.get("secrets") or [], idle_timeout=0, owner=f"endpoint {self.name}",
                             label=f"endpoint {self.name} v{self.version}", caller=Caller("endpoint", self.name))

    async def _start(self, version: int) -> None:
        """One more container; counted in `starting` until it serves (or fails), never in neither."""
        try:
            container = await on_own_thread(self.manager.start, self.container_spec())
        except Exception as exc:  # noqa: BLE001 - reported to whoever waits
            self.starting -= 1
            self._failed_at = time.monotonic()
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("cellhop: endpoint %s: a container failed to start: %s", self.name, exc)
            if not self._current() and not self.starting:
                self._wake(EndpointUnavailable(f"endpoint {self.name!r} could not start a container: {exc}"))
            return
        link = None
        try:
            if not self.closed and version == self.version and container.phase == Phase.READY:
                link = KernelLink(container.connection_info)
                await link.use_lean_channel()
        finally:
            self.starting -= 1
        if link is None or link.closed or self.closed or version != self.version or container.phase != Phase.READY:
            if link is not None:
                link.close()
            if container.phase != Phase.EXITED:
                await on_own_thread(self.manager.stop, container.id, f"endpoint {self.name!r} no longer needs it")
            self.scale()
            return
        self.replicas.append(Replica(container, link, version))
        self.last_error = None
        self._wake()

    def _lost(self, replica: Replica, exc: Exception) -> None:
        log.warning("cellhop: endpoint %s: container %s lost a request: %s", self.name, replica.id, exc)
        self.container_exited(replica.id)

    def container_exited(self, container_id: str) -> None:
        """The container ended (or its wire did): its requests fail over, the queue may start another."""
        for replica in [r for r in self.replicas if r.id == container_id]:
            self.replicas.remove(replica)
            replica.link.close()
            if replica.container.phase != Phase.EXITED:
                asyncio.ensure_future(on_own_thread(self.manager.stop, replica.id, "its wire closed"))
        if self.waiters:
            self.scale()

    def _stop(self, replica: Replica, reason: str) -> None:
        if replica in self.replicas:
            self.replicas.remove(replica)
        replica.link.close()
        asyncio.ensure_future(on_own_thread(self.manager.stop, replica.id, reason))

    def tick(self) -> None:
        """Scale down what stayed idle past `scaledown`; keep min_containers; stop idle old versions."""
        now = time.monotonic()
        for replica in list(self.replicas):
            if replica.inflight == 0 and (replica.draining or replica.version != self.version):
                self._stop(replica, f"endpoint {self.name!r} was updated to version {self.version}")
        idle = sorted((r for r in self._current() if r.inflight == 0), key=lambda r: r.idle_since)
        extra = len(self._current()) - self.spec["min_containers"]
        for replica in idle[:max(extra, 0)]:
            if now - replica.idle_since > self.spec["scaledown"]:
                self._stop(replica, f"idle for {self.spec['scaledown']:g} s (endpoint {self.name!r} scaledown)")
        self.scale()

    def update(self, record: dict, code: bytes) -> None:
        """A new version: new requests go to its containers; old ones finish theirs and stop."""
        ready = len(self._current())
        self._set(record, code)
        for replica in self.replicas:
            replica.draining = True
            if replica.inflight == 0:
                self._stop(replica, f"endpoint {self.name!r} was updated to version {self.version}")
        for _ in range(min(max(ready - self.starting, 0), self.spec["max_containers"])):
            self.starting += 1
            asyncio.ensure_future(self._start(self.version))
        self._wake()  # waiters pick again (new version's containers)
        self.scale()

    def close(self, reason: str) -> None:
        self.closed = True
        for replica in list(self.replicas):
            self._stop(replica, reason)
        self._wake(EndpointUnavailable(f"endpoint {self.name!r}: {reason}"))
        self._flush()

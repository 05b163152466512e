"""`cellhop.remote`: functions that run in containers, for code rather than cells.

    @cellhop.remote(gpu="H100")
    def train(lr): ...

    train.remote(0.1)              # runs in a warm container, returns the result
    train.map([0.1, 0.01, 0.001])  # over as many containers as the GPU budget allows
    h = train.spawn(0.1)           # a handle: h.status, h.wait(), h.cancel()
    train(0.1)                     # still a plain local call

Results come back under a pull policy: `pull="safe"` (or the notebook's
c.Cellhop.pull = "safe") brings back data types only, rebuilt without running
the container's code (safe_pickle.py); "all" (the default) any object.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys

import zmq

from ..errors import ContainerDied, ContainerGone
from ..gpu_request import ANY, GpuRequest, feasible_choices
from .container_pool import ContainerPool, process_pool
from .awaited_there import shipped_form
from .container_session import ContainerSession
from .output_relay import KernelSink
from .remote_run import RemoteRun
from .remote_debug import notebook_input_fn
from .run_spec import RunSpec
from .safe_pickle import check_policy


def _notebook():
    """(pool, parent header, %gpu defaults) of the notebook we run in: the pool its %%remote cells use;
    outside IPython, this process's pool."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        from .extension import remote_cells

        cells = remote_cells(shell)
        return cells.pool, cells.sink.current_parent(), cells.defaults
    from .control_client import get_control_plane

    return process_pool(get_control_plane()), {}, None


class RemoteTraceback(Exception):
    """The container's traceback of a remote exception, shown as its cause (as concurrent.futures and
    multiprocessing show a worker's): every IPython and plain Python prints a cause, not every one a note."""

    def __str__(self) -> str:
        return "\n--- traceback in the container ---\n" + str(self.args[0]).rstrip()


def _raise_remote(exc: BaseException):
    text = getattr(exc, "__cellhop_remote_traceback__", "")
    if text and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(text)
    raise exc


class RemoteFunction:
    def __init__(self, fn, gpu=None, cpus=None, memory=None, timeout=None, max_containers=None, image=None,
                 volumes=None, secrets=None, pull: str = "all", min_containers: int = 0, retries=None,
                 workdir: str = "none"):
        from .runs import Retries

        self.fn = fn
        self._shipped = shipped_form(fn)  # an async function runs to its end in the container (awaited_there.py)
        self.retries = Retries.of(retries)  # a failed call or a dead container is tried again (cellhop.Retries)
        self.attempts: list[dict] = []  # the attempts of the last .remote() call
        self.pull = check_policy(pull)  # the notebook's c.Cellhop.pull (its pool's) still applies when stricter
        self.gpu = gpu  # None: the notebook's %gpu choice at call time
        # checked now: a bad mount, secret name or size fails at decoration, not at the call
        self.spec = RunSpec(gpu=GpuRequest.parse(gpu) if gpu is not None else GpuRequest(), cpus=cpus,
                            memory=memory, timeout=timeout, volumes=volumes, secrets=secrets,
                            keep_warm=min_containers, workdir=workdir)
        self.image = image  # a cellhop.Image; None: the notebook's own environment
        self._image_info: dict | None = None
        self._image_spec: str | None = None  # the build spec (JSON) _image_info answers
        self.max_containers = max_containers
        self.__name__ = getattr(fn, "__name__", "function")
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn
        self._user = f"function {self.__name__} {id(self):x}"  # this function, to the pool
        self._label = f"function {self.__name__}"  # what the control plane shows for its containers
        self._pools: set = set()  # the pools it ran in (one: its notebook's)
        self.min_containers = min_containers
        self.warming = self.keep_warm(min_containers) if min_containers else None

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def local(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<cellhop.remote function {self.__name__} gpu={self.gpu if self.gpu is not None else '%gpu'}>"

    # -- containers ---------------------------------------------------------------
    def _run_spec(self, defaults: RunSpec | None) -> RunSpec:
        spec = self.spec
        if self.gpu is None and defaults is not None:
            spec = spec.with_(gpu=defaults.gpu)
        if self._image_info is not None:
            spec = spec.with_(image_key=self._image_info["key"])
        return spec

    def _where(self, values: dict) -> tuple[ContainerPool, dict, RunSpec]:
        """Where a call runs: (the pool, the notebook parent header, the run spec), the image built."""
        pool, parent, defaults = _notebook()
        self._pools.add(pool)
        self._prepare_image(pool, self._run_spec(defaults), values)
        return pool, parent, self._run_spec(defaults)

    def _prepare_image(self, pool: ContainerPool, spec: RunSpec, values: dict) -> None:
        """Build this function's image (progress shows if it builds; instant when cached) and check
        that `values` will unpickle there. A rebuilt image retires the containers of the old one."""
        if self.image is None or self.image.is_default:
            return
        from .image_use import build_for_use, check_values

        old = self._image_info["key"] if self._image_info else None
        image = self.image if self.image.name else self.image.named(self.__name__)
        warm = old is not None and pool.warm(spec, self._user)  # `spec` holds the old key
        if not (warm and self._image_spec == json.dumps(image.build_spec(), sort_keys=True)):
            # not while a container of it is warm: a warm call makes no request
            self._image_info = build_for_use(pool.control, image, in_kernel=isinstance(pool.sink, KernelSink))
            self._image_spec = json.dumps(image.build_spec(), sort_keys=True)
            if old is not None and old != self._image_info["key"]:
                self.shutdown()
        check_values(values, self._image_info, image)

    def _budget(self, pool: ContainerPool, request: GpuRequest) -> int:
        """How many containers `.map` may use: what the GPU request allows on this host."""
        if request.cpu_only:
            budget = min(4, os.cpu_count() or 1)
        else:
            inv = pool.control.inventory()
            choice = feasible_choices(request, inv)[0]
            have = len(inv.gpus) if choice.type == ANY else len(inv.of_type(choice.type))
            budget = max(1, have // choice.count)
        return min(budget, self.max_containers) if self.max_containers else budget

    def _live_sessions(self) -> list[ContainerSession]:
        """The warm containers this function ran in."""
        return [s for pool in list(self._pools) for s in pool.sessions(self._user).values()]

    def keep_warm(self, n: int):
        """Keep `n` containers of this function started, holding their GPUs while idle (never scaled down);
        0 lets the idle ones go. Starts them in the background; returns that thread (or None)."""
        self.spec = self.spec.with_(keep_warm=n)
        self.min_containers = n
        pool, _, spec = self._where({})
        return pool.keep_warm(spec, self._user, self._label, n)

    def shutdown(self) -> None:
        """Stop this function's containers now (those no %%remote cell or other function used;
        otherwise their idle timeout does)."""
        for pool in list(self._pools):
            pool.release(self._user, reason=f"{self.__name__}.shutdown()")

    # -- calls --------------------------------------------------------------------
    def remote(self, *args, **kwargs):
        """Run once in a warm container; return the result or raise the remote exception. With `retries`,
        a failed call or a dead container is tried again after its backoff (`self.attempts` records each)."""
        import time

        self._not_a_generator("remote")
        self.attempts = []
        gone_once = False
        while True:
            started = time.time()
            try:
                pool, parent, spec = self._where({"fn": self.fn, "args": args, "kwargs": kwargs})
                with pool.lease(spec, self._user, self._label) as lease:
                    (ok, value), = lease.session.apply(self._shipped, [(args, kwargs)], parent, timeout=spec.timeout,
                                                       policy=self.pull, input_fn=notebook_input_fn())
            except ContainerGone:  # it had been stopped (idle) before the call reached it: a fresh one takes it
                if gone_once:
                    raise
                gone_once = True
                continue
            except ContainerDied as exc:
                ok, value = False, exc
            self.attempts.append({"attempt": len(self.attempts) + 1, "started": started, "ended": time.time(),
                                  "status": "succeeded" if ok else "failed",
                                  "error": None if ok else f"{type(value).__name__}: {value}"})
            if ok:
                return value
            if not (self.retries and len(self.attempts) <= self.retries.max_retries
                    and not isinstance(value, KeyboardInterrupt)):
                _raise_remote(value)
            time.sleep(self.retries.delay(len(self.attempts)))

    def _not_a_generator(self, how: str) -> None:
        if inspect.isgeneratorfunction(self.fn) or inspect.isasyncgenfunction(self.fn):
            raise TypeError(f"{self.__name__} is a generator function, whose items cannot come back from .{how}(): "
                            f"iterate over {self.__name__}.remote_gen(...) to get them as the container makes them")

    def remote_gen(self, *args, **kwargs):
        """A generator function's items, made in a container as this iterator asks for them
        (remote_generator.py); leaving the loop early closes the generator there."""
        from .remote_generator import stream

        return stream(lambda: self._where({"fn": self.fn, "args": args, "kwargs": kwargs}), self.fn, args, kwargs,
                      lambda pool, spec: pool.lease(spec, self._user, self._label), lambda: _notebook()[1],
                      _raise_remote, self.pull, notebook_input_fn())

    def spawn(self, *args, detach: bool = False, **kwargs) -> RemoteRun:
        """Start a call and return at once; the handle has status, wait() and cancel().

        `detach=True`: the server owns the call (a cellhop.Run, kernel/runs.py): it outlives this kernel,
        and `cellhop.Run(id)` picks it up in any later one."""
        self._not_a_generator("spawn")
        if detach:
            return self._detached(args, kwargs)
        pool, parent, spec = self._where({"fn": self.fn, "args": args, "kwargs": kwargs})
        lease = pool.lease(spec, self._user, self._label, own_connection=True)

        def target():
            with lease:
                (ok, value), = lease.session.apply(self._shipped, [(args, kwargs)], parent, timeout=spec.timeout, policy=self.pull)
            if not ok:
                _raise_remote(value)
            return value

        return RemoteRun(f"{self.__name__}.spawn", target, interrupt=lease.session.interrupt)

    def _detached(self, args: tuple, kwargs: dict):
        from .runs import spec_of, submit_call

        pool, _, spec = self._where({"fn": self.fn, "args": args, "kwargs": kwargs})
        return submit_call(self._shipped, args, kwargs, spec_of(spec, self._image_info and self._image_info["key"]),
                           self.__name__, self.retries, pool.control)

    def deploy(self, name: str | None = None) -> dict:
        """Make it callable by name (`cellhop.Function.lookup(name)`, REST `POST runs`), and an HTTP
        endpoint too (server_ext/endpoints.py): one deploy, shared with @cellhop.endpoint."""
        from .endpoint import Endpoint

        spec = self.spec
        return Endpoint(self.fn, gpu=str(spec.gpu) if not spec.gpu.cpu_only else None, cpus=spec.cpus,
                        memory=spec.memory, timeout=spec.timeout, image=self.image).deploy(name or self.__name__)

    def map(self, iterable, *, return_exceptions: bool = False, progress: bool = True, chunk_size: int | None = None):
        """fn over every item (or argument tuple via `starmap`), in order, across the containers allowed."""
        return self._map([((item,), {}) for item in iterable], return_exceptions, progress, chunk_size)

    def starmap(self, iterable, *, return_exceptions: bool = False, progress: bool = True,
                chunk_size: int | None = None):
        return self._map([(tuple(args), {}) for args in iterable], return_exceptions, progress, chunk_size)

    def _map(self, calls: list, return_exceptions: bool, progress: bool, chunk_size: int | None) -> list:
        self._not_a_generator("map")
        n = len(calls)
        if n == 0:
            return []
        pool, parent, spec = self._where({"fn": self.fn, "calls": calls[:3]})
        leases = pool.leases(spec, self._user, self._label, min(self._budget(pool, spec.gpu), n))

        def replace():  # a container for the calls of one that died, when none of the others is left
            leases.extend(pool.leases(spec, self._user, self._label, 1))
            return leases[-1].session

        try:
            return self._run_map([lease.session for lease in leases], calls, parent, return_exceptions,
                                 progress, chunk_size, replace)
        finally:
            for lease in leases:
                lease.close()

    def _run_map(self, sessions: list[ContainerSession], calls: list, parent: dict, return_exceptions: bool,
                 progress: bool, chunk_size: int | None, replace=None) -> list:
        """A container that dies hands its calls in flight back to the queue (each chunk at most
        `retries.max_retries` times, 2 without a policy), to the others or to a new one (`replace()`)."""
        n = len(calls)
        sessions = list(sessions)
        requeues: dict[int, int] = {}
        limit = self.retries.max_retries if self.retries else 2
        size = chunk_size or max(1, min(512, math.ceil(n / (len(sessions) * 4))))
        chunks = [(i, calls[i:i + size]) for i in range(0, n, size)]
        by_start = dict(chunks)
        results: list = [None] * n
        bar = _progress_bar(n, self.__name__) if progress else None
        pending = list(reversed(chunks))
        in_flight: dict[str, tuple[ContainerSession, int]] = {}
        first_error: BaseException | None = None
        poller = zmq.Poller()
        for s in sessions:
            poller.register(s.reply_socket, zmq.POLLIN)
            poller.register(s.watch.fileno(), zmq.POLLIN)  # readable once that container is known dead

        def feed(session):
            if pending and first_error is None:
                start, chunk = pending.pop()
                in_flight[session.send_apply(self._shipped, chunk, parent, policy=self.pull)] = (session, start)

        for s in sessions:
            for _ in range(2):  # two chunks in flight per container hide the round trip
                feed(s)
        by_socket = {s.reply_socket: s for s in sessions}
        try:
            while in_flight:
                ready = dict(poller.poll(1000))
                for s in {s for s, _ in in_flight.values()}:
                    if s.watch.dead.is_set():
                        by_socket.pop(s.reply_socket, None)
                        self._requeue_of_dead(s, sessions, in_flight, pending, by_start, requeues, limit, poller)
                        if not sessions:
                            if replace is None:
                                raise ContainerDied(f"container {s.id} died during {self.__name__}.map")
                            new = replace()
                            sessions.append(new)
                            by_socket[new.reply_socket] = new
                            poller.register(new.reply_socket, zmq.POLLIN)
                            poller.register(new.watch.fileno(), zmq.POLLIN)
                        for live in sessions:
                            while sum(1 for x, _ in in_flight.values() if x is live) < 2 and pending \
                                    and first_error is None:
                                feed(live)
                for sock in ready:
                    session = by_socket.get(sock)
                    if session is None:
                        continue
                    got = session.collect_apply(timeout=0)
                    if got is None:
                        continue
                    msg_id, outcomes = got
                    _, start = in_flight.pop(msg_id)
                    for offset, (ok, value) in enumerate(outcomes):
                        if not ok and not return_exceptions and first_error is None:
                            first_error = value
                        results[start + offset] = value
                    if bar is not None:
                        bar.update(len(outcomes))
                    feed(session)
        finally:
            if bar is not None:
                bar.close()
        if first_error is not None:
            _raise_remote(first_error)
        return results

    def _requeue_of_dead(self, dead, sessions, in_flight, pending, chunks, requeues, limit, poller) -> None:
        """The calls `dead` held go back to the queue; past `limit` re-queues of one chunk, ContainerDied."""
        for socket in (dead.reply_socket, dead.watch.fileno()):
            try:
                poller.unregister(socket)
            except KeyError:
                pass
        dead.close()
        status = dead.watch.status
        why = status.describe() if status else "unknown cause"
        if dead in sessions:
            sessions.remove(dead)
        for msg_id, (session, start) in list(in_flight.items()):
            if session is not dead:
                continue
            del in_flight[msg_id]
            requeues[start] = requeues.get(start, 0) + 1
            if requeues[start] > limit:
                raise ContainerDied(f"container {dead.id} died during {self.__name__}.map ({why}); the calls from "
                                    f"item {start} on were re-queued {limit} time(s), and their containers died "
                                    "each time")
            pending.append((start, chunks[start]))
        print(f"cellhop: container {dead.id} died during {self.__name__}.map ({why}); its calls were re-queued",
              file=sys.stderr)

def _progress_bar(total: int, name: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"{name}.map", leave=False, mininterval=0.2)


def remote(fn=None, *, gpu: str | None = None, cpus: int | None = None, memory: str | None = None,
           timeout: float | None = None, max_containers: int | None = None, image=None, volumes=None,
           secrets=None, pull: str = "all", min_containers: int = 0, retries=None, workdir: str = "none"):
    """Make `fn` runnable in cellhop containers (`.remote`, `.map`, `.spawn`); usable bare or with options.

    `volumes`: {"/data": cellhop.Volume("datasets")} or ["datasets:/data", "weights:/models:ro"];
    `secrets`: [cellhop.Secret("hf"), "other-name"] (their variables, in the container's environment);
    `pull`: "safe" brings results (and errors) back as data types only, rebuilt without running the
    container's code; "all" (the default) any object.
    `min_containers`: containers started now and kept warm, holding their GPUs while idle (never scaled
    down) until `f.keep_warm(0)`, `f.shutdown()` or the kernel's end; they keep those GPUs from everyone else.
    `retries`: a number or cellhop.Retries(max_retries=3, backoff=2.0, initial_delay=1.0): a failed call or a
    dead container is tried again (.remote, detached runs; .map re-queues the calls of a container that died).
    `workdir`: "rw" or "ro" binds the notebook's folder (read-write, read-only) as the working folder, so
    relative paths are the notebook's; "none" (the default) a private empty folder.
    """
    def wrap(f):
        return RemoteFunction(f, gpu=gpu, cpus=cpus, memory=memory, timeout=timeout, max_containers=max_containers,
                              image=image, volumes=volumes, secrets=secrets, pull=pull,
                              min_containers=min_containers, retries=retries, workdir=workdir)

    return wrap(fn) if fn is not None else wrap

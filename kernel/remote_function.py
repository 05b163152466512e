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

import math
import os
import threading

import zmq

from ..container import ContainerSpec
from ..errors import ContainerDied, QueueTimeout
from ..gpu_request import ANY, GpuRequest, feasible_choices
from ..sizes import parse_memory
from .container_session import ContainerSession
from .control_client import get_control_plane
from .output_relay import ConsoleSink, KernelSink
from .remote_run import RemoteRun
from .safe_pickle import check_policy, stricter
from .secret import secret_names
from .volume import mounts_of


def _notebook_context():
    """(sink, comm proxies, parent header, %gpu defaults) of the kernel we run in, if any."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    kernel = getattr(shell, "kernel", None)
    cells = getattr(shell, "_cellhop_cells", None)
    if kernel is not None and hasattr(kernel, "iopub_socket"):
        sink = KernelSink(kernel)
        return sink, getattr(cells, "comm_proxies", None), sink.current_parent(), getattr(cells, "defaults", None)
    return ConsoleSink(), None, {}, getattr(cells, "defaults", None)


def _notebook_cells():
    """The notebook's RemoteCells (its %gpu defaults and pull policy), if cellhop is loaded here."""
    try:
        from IPython import get_ipython

        return getattr(get_ipython(), "_cellhop_cells", None)
    except ImportError:
        return None


def _raise_remote(exc: BaseException):
    text = getattr(exc, "__cellhop_remote_traceback__", "")
    if text and hasattr(exc, "add_note"):
        exc.add_note("--- traceback in the container ---\n" + text.rstrip())
    raise exc


class RemoteFunction:
    def __init__(self, fn, gpu=None, cpus=None, memory=None, timeout=None, max_containers=None, image=None,
                 volumes=None, secrets=None, pull: str = "all"):
        self.fn = fn
        self.pull = check_policy(pull)
        self.volumes = mounts_of(volumes)  # checked now: a bad mount fails at decoration, not at the call
        self.secrets = secret_names(secrets)
        self.image = image  # a cellhop.Image; None: the notebook's own environment
        self._image_info: dict | None = None
        self.gpu = gpu
        self.cpus = cpus
        self.memory = parse_memory(memory)
        self.timeout = timeout
        self.max_containers = max_containers
        self._sessions: list[ContainerSession] = []
        self._lock = threading.Lock()
        self.__name__ = getattr(fn, "__name__", "function")
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def local(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<cellhop.remote function {self.__name__} gpu={self._request()}>"

    # -- containers ---------------------------------------------------------------
    def _request(self) -> GpuRequest:
        if self.gpu is not None:
            return GpuRequest.parse(self.gpu)
        defaults = _notebook_context()[3]
        return defaults.gpu if defaults is not None else GpuRequest()

    def _spec(self, queue_timeout=None) -> ContainerSpec:
        return ContainerSpec(gpu=self._request(), owner=f"cellhop.remote {self.__name__}", cpus=self.cpus,
                             memory=self.memory, queue_timeout=queue_timeout, label=f"function {self.__name__}",
                             image=self._image_info["key"] if self._image_info else None,
                             volumes=self.volumes, secrets=self.secrets)

    def _prepare_image(self, values: dict) -> None:
        """Build this function's image (progress shows if it builds; instant when cached) and check
        that `values` will unpickle there. A rebuilt image retires the containers of the old one."""
        if self.image is None or self.image.is_default:
            return
        from .image_use import build_for_use, check_values

        old = self._image_info["key"] if self._image_info else None
        sink = _notebook_context()[0]
        image = self.image if self.image.name else self.image.named(self.__name__)
        self._image_info = build_for_use(get_control_plane(), image, in_kernel=isinstance(sink, KernelSink))
        if old is not None and old != self._image_info["key"]:
            self.shutdown()
        check_values(values, self._image_info, image)

    def _budget(self) -> int:
        """How many containers `.map` may use: what the GPU request allows on this host."""
        control = get_control_plane()
        request = self._request()
        if request.cpu_only:
            budget = min(4, os.cpu_count() or 1)
        else:
            inv = control.inventory()
            choice = feasible_choices(request, inv)[0]
            have = len(inv.gpus) if choice.type == ANY else len(inv.of_type(choice.type))
            budget = max(1, have // choice.count)
        return min(budget, self.max_containers) if self.max_containers else budget

    def _live_sessions(self) -> list[ContainerSession]:
        with self._lock:
            self._sessions = [s for s in self._sessions if s.alive()]
            return list(self._sessions)

    def _start_session(self, queue_timeout=None) -> ContainerSession:
        control = get_control_plane()
        sink, proxies, _, _ = _notebook_context()
        container = control.start(self._spec(queue_timeout))
        cells = _notebook_cells()
        pull = stricter(self.pull, getattr(cells, "pull", None))  # the notebook's c.Cellhop.pull is a floor
        session = ContainerSession(container, control, sink, proxies, pull=pull)
        with self._lock:
            self._sessions.append(session)
        return session

    def _sessions_for(self, wanted: int) -> list[ContainerSession]:
        sessions = self._live_sessions()
        if not sessions:
            sessions = [self._start_session()]
        missing = wanted - len(sessions)
        if missing > 0:  # more only where a GPU is free now: never queue behind ourselves
            extra: list = []

            def start_one():
                try:
                    extra.append(self._start_session(queue_timeout=0.01))
                except QueueTimeout:
                    pass

            threads = [threading.Thread(target=start_one) for _ in range(missing)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sessions = self._live_sessions()
        return sessions[:wanted]

    def shutdown(self) -> None:
        """Stop this function's containers now (otherwise their idle timeout does)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()
            get_control_plane().stop(s.id, reason=f"{self.__name__}.shutdown()")

    # -- calls --------------------------------------------------------------------
    def remote(self, *args, **kwargs):
        """Run once in a warm container; return the result or raise the remote exception."""
        self._prepare_image({"fn": self.fn, "args": args, "kwargs": kwargs})
        session = self._sessions_for(1)[0]
        parent = _notebook_context()[2]
        (ok, value), = session.apply(self.fn, [(args, kwargs)], parent, timeout=self.timeout)
        get_control_plane().touch(session.id)
        if not ok:
            _raise_remote(value)
        return value

    def spawn(self, *args, **kwargs) -> RemoteRun:
        """Start a call and return at once; the handle has status, wait() and cancel()."""
        self._prepare_image({"fn": self.fn, "args": args, "kwargs": kwargs})
        session = self._sessions_for(1)[0]
        worker = session.secondary()
        parent = _notebook_context()[2]

        def target():
            try:
                (ok, value), = worker.apply(self.fn, [(args, kwargs)], parent, timeout=self.timeout)
            finally:
                worker.close()
            if not ok:
                _raise_remote(value)
            return value

        return RemoteRun(f"{self.__name__}.spawn", target, interrupt=session.interrupt)

    def map(self, iterable, *, return_exceptions: bool = False, progress: bool = True, chunk_size: int | None = None):
        """fn over every item (or argument tuple via `starmap`), in order, across the containers allowed."""
        return self._map([((item,), {}) for item in iterable], return_exceptions, progress, chunk_size)

    def starmap(self, iterable, *, return_exceptions: bool = False, progress: bool = True,
                chunk_size: int | None = None):
        return self._map([(tuple(args), {}) for args in iterable], return_exceptions, progress, chunk_size)

    def _map(self, calls: list, return_exceptions: bool, progress: bool, chunk_size: int | None) -> list:
        n = len(calls)
        if n == 0:
            return []
        self._prepare_image({"fn": self.fn, "calls": calls[:3]})
        sessions = self._sessions_for(min(self._budget(), n))
        size = chunk_size or max(1, min(512, math.ceil(n / (len(sessions) * 4))))
        chunks = [(i, calls[i:i + size]) for i in range(0, n, size)]
        results: list = [None] * n
        bar = _progress_bar(n, self.__name__) if progress else None
        parent = _notebook_context()[2]
        pending = list(reversed(chunks))
        in_flight: dict[str, tuple[ContainerSession, int]] = {}
        first_error: BaseException | None = None
        poller = zmq.Poller()
        for s in sessions:
            poller.register(s.conn.sockets["shell"], zmq.POLLIN)

        def feed(session):
            if pending and first_error is None:
                start, chunk = pending.pop()
                in_flight[session.send_apply(self.fn, chunk, parent)] = (session, start)

        for s in sessions:
            for _ in range(2):  # two chunks in flight per container hide the round trip
                feed(s)
        by_socket = {s.conn.sockets["shell"]: s for s in sessions}
        try:
            while in_flight:
                ready = dict(poller.poll(100))
                if not ready:
                    for s in {s for s, _ in in_flight.values()}:
                        if not s.alive():
                            status = get_control_plane().poll(s.id)
                            raise ContainerDied(f"container {s.id} died during {self.__name__}.map: "
                                                f"{status.describe() if status else 'unknown cause'}")
                    continue
                for sock in ready:
                    session = by_socket[sock]
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
        for s in sessions:
            get_control_plane().touch(s.id)
        if first_error is not None:
            _raise_remote(first_error)
        return results


def _progress_bar(total: int, name: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"{name}.map", leave=False, mininterval=0.2)


def remote(fn=None, *, gpu: str | None = None, cpus: int | None = None, memory: str | None = None,
           timeout: float | None = None, max_containers: int | None = None, image=None, volumes=None,
           secrets=None, pull: str = "all"):
    """Make `fn` runnable in cellhop containers (`.remote`, `.map`, `.spawn`); usable bare or with options.

    `volumes`: {"/data": cellhop.Volume("datasets")} or ["datasets:/data", "weights:/models:ro"];
    `secrets`: [cellhop.Secret("hf"), "other-name"] (their variables, in the container's environment);
    `pull`: "safe" brings results (and errors) back as data types only, rebuilt without running the
    container's code; "all" (the default) any object.
    """
    def wrap(f):
        return RemoteFunction(f, gpu=gpu, cpus=cpus, memory=memory, timeout=timeout, max_containers=max_containers,
                              image=image, volumes=volumes, secrets=secrets, pull=pull)

    return wrap(fn) if fn is not None else wrap

"""`cellhop.cls`: classes whose instances live in their containers, loaded once, called many times.

    @cellhop.cls(gpu="H100")
    class Model:
        def __init__(self, size="7b"):
            self.size = size

        @cellhop.enter
        def load(self):              # once per container, before its first call
            self.weights = load_weights(self.size)

        def predict(self, x):
            return self.weights @ x

        @cellhop.exit
        def close(self):             # once, when the container stops
            ...

    Model().predict.remote(x)             # the instance is made (and entered) in a container, then called
    Model().predict.map(xs)               # over as many containers as allowed, each entered once
    Model(size="70b").predict.spawn(x)    # other constructor arguments: another instance, other containers
    Model.shutdown()                      # stop its containers (their exit methods run)

How it runs: each instance (class plus constructor arguments) is a pool user
of its own, as a `cellhop.remote` function is, so its warm containers are kept
for it from cell to cell and used by nobody else; calls are apply requests of
RemoteFunction's machinery whose function is a `class_instances.Dispatch`,
which makes the instance in the container on first use and keeps it there
(class_instances.py: the container side, and when exit methods run).
Constructor arguments travel with each request (they are small: names,
sizes); load the large things in an enter method.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import uuid

import cloudpickle

from .awaited_there import call
from .class_instances import Dispatch
from .remote_function import RemoteFunction, _notebook, remote

_ENTER = "__cellhop_enter__"
_EXIT = "__cellhop_exit__"


def enter(fn=None):
    """Mark a method of a `cellhop.cls` class to run once per container, before its first call
    (`@cellhop.enter` or `@cellhop.enter()`). It takes no arguments but self."""
    def mark(f):
        setattr(_function_of(f, "enter"), _ENTER, True)
        return f

    return mark(fn) if fn is not None else mark


def exit(fn=None):  # noqa: A001  (cellhop.exit, as modal.exit)
    """Mark a method of a `cellhop.cls` class to run when its container stops: idle timeout,
    `.shutdown()`, the pool letting the container go, the notebook shutting down
    (`@cellhop.exit` or `@cellhop.exit()`). It takes no arguments but self; all exit methods of a
    container have a few seconds together (class_instances.EXIT_TIMEOUT)."""
    def mark(f):
        setattr(_function_of(f, "exit"), _EXIT, True)
        return f

    return mark(fn) if fn is not None else mark


def _function_of(f, what: str):
    if isinstance(f, (staticmethod, classmethod)) or not callable(f):
        raise TypeError(f"@cellhop.{what} marks a plain method (def name(self): ...), not {f!r}")
    return f


def _marked(klass) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names of the enter and exit methods of `klass`, base classes first, in definition order."""
    enters, exits = {}, {}
    for base in reversed(klass.__mro__):
        for name, value in vars(base).items():
            for marks, attr in ((enters, _ENTER), (exits, _EXIT)):
                marks.pop(name, None)  # an override decides for itself
                if getattr(value, attr, False):
                    marks[name] = True
    return tuple(enters), tuple(exits)


def _plain(klass):
    return klass


class RemoteClass:
    """A class decorated with `cellhop.cls`: call it for an instance handle (`Model(size="7b")`)."""

    def __init__(self, klass, *, idle_timeout: float | None = None, **options):
        if not inspect.isclass(klass):
            raise TypeError(f"@cellhop.cls decorates a class, not {klass!r}; for a function use @cellhop.remote")
        if idle_timeout is not None and (isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float))
                                         or not 0 <= idle_timeout < float("inf")):
            raise ValueError(f"idle_timeout={idle_timeout!r}: give seconds (a number >= 0) that an idle container "
                             "of this class stays warm, or None for the control plane's default")
        self.klass = klass
        self.options = options
        self.idle_timeout = idle_timeout
        remote(**options)(klass)  # the options are checked now: a bad size or mount fails here, not at a call
        self.enter_methods, self.exit_methods = _marked(klass)
        self.__name__ = klass.__name__
        self.__qualname__ = getattr(klass, "__qualname__", klass.__name__)
        self.__doc__ = klass.__doc__
        self.__wrapped__ = klass
        self._token = uuid.uuid4().hex[:12]  # this decoration: a redefined class gets new instances
        self._instances: dict[str, RemoteInstance] = {}
        self._lock = threading.Lock()

    def __call__(self, *args, **kwargs) -> RemoteInstance:
        """The handle of the instance made from these constructor arguments (made in each container on its
        first call there). Equal arguments give the same instance and its warm containers."""
        try:
            arguments = cloudpickle.dumps((args, kwargs), protocol=5)
        except Exception as exc:
            raise TypeError(f"{self.__name__}(...): its constructor arguments must pickle to travel to the "
                            f"container ({type(exc).__name__}: {exc}); pass names or sizes, and load large "
                            "things in an @cellhop.enter method") from exc
        digest = hashlib.sha256(arguments).hexdigest()[:16]
        with self._lock:
            found = self._instances.get(digest)
            if found is None:
                found = self._instances[digest] = RemoteInstance(self, args, kwargs, digest)
            return found

    def shutdown(self) -> None:
        """Stop the containers of every instance of this class (their exit methods run)."""
        with self._lock:
            instances = list(self._instances.values())
        for instance in instances:
            instance.shutdown()

    def __reduce__(self):
        # a method that names its own class (Model.X) finds the plain class in the container
        return _plain, (self.klass,)

    # and in the notebook (.local), the name still works as the class: Model.X, isinstance(obj, Model)
    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("klass", "options", "_instances", "_lock"):
            raise AttributeError(name)
        return getattr(self.klass, name)

    def __instancecheck__(self, obj) -> bool:
        return isinstance(obj, self.klass)

    def __subclasscheck__(self, other) -> bool:
        return issubclass(other, self.klass)

    def __repr__(self) -> str:
        gpu = self.options.get("gpu")
        return f"<cellhop.cls {self.__name__} gpu={gpu if gpu is not None else '%gpu'}>"


class RemoteInstance:
    """One instance of a `cellhop.cls` class: its methods run where it lives (`.predict.remote(x)`)."""

    def __init__(self, owner: RemoteClass, args: tuple, kwargs: dict, digest: str):
        self._owner = owner
        self._args, self._kwargs = args, kwargs
        self._label = _call_text(owner.__name__, args, kwargs)
        payload = cloudpickle.dumps((owner.klass, args, kwargs), protocol=5)
        key = f"{owner.klass.__module__}.{owner.__qualname__}/{owner._token}/{digest}"
        dispatch = Dispatch(key, self._label, payload, owner.enter_methods, owner.exit_methods)
        runner = RemoteFunction(dispatch, **owner.options)
        if owner.idle_timeout is not None:
            runner.spec = runner.spec.with_(idle_timeout=owner.idle_timeout)
        runner.__name__ = owner.__name__
        runner._user = f"class {owner.__name__} {owner._token} {digest}"  # its containers, to the pool
        runner._label = f"class {owner.__name__}"  # what the control plane shows for them
        self._runner = runner
        self._local = None
        self._local_lock = threading.Lock()

    def __getattr__(self, name: str) -> RemoteMethod:
        if name.startswith("__") or name in ("_owner", "_runner"):
            raise AttributeError(name)
        klass = self._owner.klass
        try:
            value = inspect.getattr_static(klass, name)
        except AttributeError:
            raise AttributeError(f"{self._owner.__name__} has no method {name!r}") from None
        if not (callable(value) or isinstance(value, (staticmethod, classmethod))):
            raise AttributeError(f"{self._owner.__name__}.{name} is not a method; only methods are called remotely "
                                 "(an instance's attributes live in its container: return them from a method)")
        return RemoteMethod(self, name)

    def shutdown(self) -> None:
        """Stop this instance's containers now (their exit methods run); the next call starts a fresh one."""
        self._runner.shutdown()

    def method(self, name: str) -> RemoteMethod:
        """The method `name`, also one whose name the handle itself uses (`.method("shutdown").remote()`)."""
        return RemoteInstance.__getattr__(self, name)

    def _local_instance(self):
        with self._local_lock:
            if self._local is None:
                obj = self._owner.klass(*self._args, **self._kwargs)
                for name in self._owner.enter_methods:
                    call(getattr(obj, name))  # an async one run to its end (awaited_there.py)
                self._local = obj
            return self._local

    def __repr__(self) -> str:
        return f"<cellhop.cls instance {self._label}>"


class RemoteMethod:
    """A method of a `cellhop.cls` instance: `.remote`, `.map`, `.starmap`, `.spawn`, `.local`."""

    def __init__(self, instance: RemoteInstance, name: str):
        self._instance = instance
        self._runner = instance._runner
        self.__name__ = name

    def remote(self, *args, **kwargs):
        """Run once in a warm container of the instance (made there on first use); the result."""
        return self._prepared().remote(self.__name__, *args, **kwargs)

    def spawn(self, *args, **kwargs):
        """Start a call and return at once; the handle has status, wait() and cancel()."""
        return self._prepared().spawn(self.__name__, *args, **kwargs)

    def map(self, iterable, *, return_exceptions: bool = False, progress: bool = True, chunk_size: int | None = None):
        """The method over every item, in order, across the containers allowed (each enters once)."""
        return self._prepared()._map([((self.__name__, item), {}) for item in iterable], return_exceptions,
                                     progress, chunk_size)

    def starmap(self, iterable, *, return_exceptions: bool = False, progress: bool = True,
                chunk_size: int | None = None):
        return self._prepared()._map([((self.__name__, *args), {}) for args in iterable], return_exceptions,
                                     progress, chunk_size)

    def _prepared(self) -> RemoteFunction:
        """The instance's runner, its Dispatch told whether errors come back under pull="safe" (the class's
        own policy or the notebook's c.Cellhop.pull)."""
        runner = self._runner
        pools = runner._pools or {_notebook()[0]}  # after its first call, the pool it runs in (asks nobody)
        runner.fn.safe = runner.pull == "safe" or any(getattr(p, "pull", "all") == "safe" for p in pools)
        return runner

    def local(self, *args, **kwargs):
        """Run in this notebook, on a local instance of its own (made and entered once; exit never runs)."""
        return getattr(self._instance._local_instance(), self.__name__)(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        label = self._instance._label
        raise TypeError(f"{label}.{self.__name__} lives in a container: call {self.__name__}.remote(...), "
                        f".map(...) or .spawn(...) (or .local(...) to run it in this notebook)")

    def __repr__(self) -> str:
        return f"<cellhop.cls method {self._instance._label}.{self.__name__}>"


def _call_text(name: str, args: tuple, kwargs: dict, limit: int = 80) -> str:
    parts = [_short(repr(a)) for a in args] + [f"{k}={_short(repr(v))}" for k, v in kwargs.items()]
    text = f"{name}({', '.join(parts)})"
    return text if len(text) <= limit else text[:limit - 4] + "...)"


def _short(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def cls(klass=None, *, gpu: str | None = None, cpus: int | None = None, memory: str | None = None,
        timeout: float | None = None, max_containers: int | None = None, image=None, volumes=None, secrets=None,
        pull: str = "all", idle_timeout: float | None = None, retries=None):
    """Make a class whose instances live in cellhop containers: `@cellhop.enter` methods run once per
    container before its first call, `@cellhop.exit` methods when it stops, and methods are called with
    `Model(...).method.remote(...)`, `.map(...)`, `.spawn(...)`. Usable bare or with options.

    Options as `cellhop.remote` takes (gpu, cpus, memory, timeout per call, max_containers, image,
    volumes, secrets, pull), and `idle_timeout`: seconds an idle container of it stays warm (its instance
    loaded) before it is stopped; None: the control plane's c.Cellhop.idle_timeout.
    Each set of constructor arguments is an instance of its own, in containers of its own.
    `retries` (a number or cellhop.Retries): a failed method call or a dead container is tried again.
    """
    def wrap(k):
        return RemoteClass(k, gpu=gpu, cpus=cpus, memory=memory, timeout=timeout, max_containers=max_containers,
                           image=image, volumes=volumes, secrets=secrets, pull=pull, idle_timeout=idle_timeout,
                           retries=retries)

    return wrap(klass) if klass is not None else wrap

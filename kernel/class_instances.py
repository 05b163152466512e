"""The container side of `cellhop.cls`: one instance per class and constructor arguments, made once.

A call of `Model(size="7b").predict.remote(x)` reaches the container as an
ordinary apply request (`cellhop_apply_request`) whose function is a
`Dispatch`: the instance's key, its class and constructor arguments pickled
once in the notebook (`payload`), and the names of its `@cellhop.enter` and
`@cellhop.exit` methods. The first call in a container rebuilds the class,
makes the instance, runs its enter methods in definition order, and keeps it
here (`_instances`); every later call, from any notebook cell, finds it by key
and only calls the method. A failing `__init__` or enter method keeps nothing:
the call raises `EnterFailed` (a RuntimeError under pull="safe"; the remote
traceback attached as a note, the failing method's own frames in the message), the
other calls of the same request fail fast with the same error, and the next
request tries again from scratch.

Exit methods run once, when the container stops: on SIGTERM (the control
plane's polite stop: idle timeout, the pool letting the container go,
`.shutdown()`, the notebook shutting down) or on a kernel shutdown request,
all of them together within EXIT_TIMEOUT seconds (the control plane kills
after c.Cellhop.stop_grace, 5 s by default); their output goes to the
container's log, since no cell listens any more. A container that holds no
instance with exit methods gets no handler at all.

Everything here is imported lazily by the first call; nothing runs at import.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

from .awaited_there import call

EXIT_TIMEOUT = 4.0  # seconds all exit methods of a container may take together

_instances: dict[str, tuple[object, tuple[str, ...]]] = {}  # key -> (instance, its exit method names)
_lock = threading.RLock()
_exit_state = {"installed": False, "ran": False, "previous": None}


class EnterFailed(RuntimeError):
    """Making an instance of a `cellhop.cls` class failed in its container (its __init__ or an
    `@cellhop.enter` method raised); nothing of it was kept."""


class Dispatch:
    """What an apply request calls for a method of a `cellhop.cls` instance: `dispatch(method, *args)`."""

    def __init__(self, key: str, label: str, payload: bytes, enter: tuple[str, ...], exit: tuple[str, ...]):
        self.key = key  # class identity and constructor arguments
        self.label = label  # "Model(size='7b')", for messages
        self.__name__ = label
        self.payload = payload  # cloudpickle of (cls, args, kwargs), unpickled only to make the instance
        self.enter = enter
        self.exit = exit
        self.safe = False  # set per call by the notebook: results come back under pull="safe"
        self._failed: BaseException | None = None  # this request's failed construction: fail fast

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_failed"] = None
        return state

    def __call__(self, method: str, *args, **kwargs):
        return call(getattr(self.instance(), method), *args, **kwargs)  # an async one run to its end

    def instance(self):
        """The container's instance for this key, made (and entered) on first use."""
        found = _instances.get(self.key)
        if found is not None:
            return found[0]
        with _lock:
            found = _instances.get(self.key)
            if found is not None:
                return found[0]
            if self._failed is not None:
                raise self._failed
            try:
                obj = self._make()
            except EnterFailed as exc:
                # under pull="safe" only builtin exceptions come back: the same message, as a RuntimeError
                self._failed = RuntimeError(f"EnterFailed: {exc}") if self.safe else exc
                raise self._failed from exc.__cause__
            _instances[self.key] = (obj, self.exit)
            if self.exit:
                _install_exit_hooks()
            return obj

    def _make(self):
        import cloudpickle

        container = os.environ.get("CELLHOP_CONTAINER_ID", "")
        where = f" in container {container}" if container else " in the container"
        try:
            cls, args, kwargs = cloudpickle.loads(self.payload)
        except Exception as exc:
            raise EnterFailed(f"class {self.label} could not be rebuilt{where}: {type(exc).__name__}: {exc} "
                              "(does the container's environment have the modules it uses?)") from exc
        try:
            obj = cls(*args, **kwargs)
        except Exception as exc:
            raise EnterFailed(f"{self.label} failed{where} (its __init__): {type(exc).__name__}: {exc}. "
                              "Nothing was kept; the next call makes the instance again" + _user_frames(exc)) from exc
        for name in self.enter:
            try:
                call(getattr(obj, name))
            except Exception as exc:
                raise EnterFailed(
                    f"{self.label}.{name}(), an @cellhop.enter method, failed{where}: {type(exc).__name__}: "
                    f"{exc}. The instance was not kept (its exit methods do not run); the next call makes "
                    "it again and runs its enter methods again" + _user_frames(exc)) from exc
        return obj


def _user_frames(exc: BaseException) -> str:
    """The failing method's own frames (not this module's), for the message: a notebook shows it whatever
    its IPython does with exception notes (where the whole remote traceback is)."""
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # the first is _make's call
    if not frames:
        return ""
    return ("\nTraceback in the container (most recent call last):\n" + "".join(traceback.format_list(frames))
            + "".join(traceback.format_exception_only(type(exc), exc))).rstrip()


def instance_count() -> int:
    """How many instances this container holds (for tests and the curious)."""
    return len(_instances)


def keep(key: str, obj, exit_names: tuple[str, ...]) -> None:
    """Keep an instance made elsewhere (an endpoint class's) so its exit methods run when the container
    stops, as a cellhop.cls instance's do."""
    with _lock:
        _instances[key] = (obj, exit_names)
    if exit_names:
        _install_exit_hooks()


# -- exit methods --------------------------------------------------------------------------------
def _install_exit_hooks() -> None:
    """Run exit methods on SIGTERM and on a kernel shutdown request; installed once, on the main thread."""
    if _exit_state["installed"]:
        return
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread; the next call from it installs them
    _exit_state["installed"] = True
    _exit_state["previous"] = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from ipykernel.kernelbase import Kernel

        kernel = Kernel.instance() if Kernel.initialized() else None
    except Exception:
        kernel = None
    hooks = getattr(kernel, "shutdown_hooks", None)  # the container kernel's (container_kernel.py)
    if isinstance(hooks, list):
        hooks.insert(0, run_exit_methods)  # before curve_tunnel's exit watchdog starts


def _on_sigterm(signum, frame) -> None:
    run_exit_methods()
    previous = _exit_state["previous"]
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous in (signal.SIG_DFL, None):
        os.kill(os.getpid(), signal.SIGTERM)  # end as the stop meant, with the same exit status as before


def run_exit_methods(timeout: float = EXIT_TIMEOUT) -> None:
    """Every kept instance's exit methods (newest instance first), once, within `timeout` seconds
    together; their output and failures go to the container's log."""
    with _lock:
        if _exit_state["ran"]:
            return
        _exit_state["ran"] = True
        kept = list(reversed(_instances.items()))
    work = [(key, obj, name) for key, (obj, names) in kept for name in names]
    if not work:
        return
    log = _log_stream()
    done = threading.Event()

    def run():
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            for key, obj, name in work:
                try:
                    call(getattr(obj, name))
                except BaseException:
                    log.write(f"cellhop: exit method {type(obj).__name__}.{name}() failed:\n"
                              + traceback.format_exc())
        finally:
            sys.stdout, sys.stderr = saved
            log.flush()
            done.set()

    threading.Thread(target=run, name="cellhop-exit-methods", daemon=True).start()
    if not done.wait(timeout):
        log.write(f"cellhop: exit methods still running after {timeout:g} s; the container stops anyway\n")
        log.flush()


def _log_stream():
    """A text stream to the container's log (the process's real stderr, not the notebook's IOPub)."""
    import io

    for stream in (sys.stderr, sys.__stderr__):
        try:
            fd = os.dup(stream.fileno())  # ipykernel's OutStream answers the original descriptor
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            continue
        return io.TextIOWrapper(io.FileIO(fd, "w"), line_buffering=True, errors="replace")
    return io.StringIO()

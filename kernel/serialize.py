"""Values across the wire: cloudpickle with pickle-5 out-of-band buffers as separate frames.

A numpy array of 256 MiB travels as one frame pointing at the array's own
memory (zero-copy in pyzmq), never inside one big bytes object. Each name is
packed on its own so one value that cannot travel names itself and the
others still go.

Unpickling runs the code a pickle names. What comes back from a container is
rebuilt with `pull="all"` (anything: the notebook trusts the container's
code, as it trusts its own cells) or `pull="safe"` (data types only, nothing
of the container's code runs: safe_pickle.py, docs/security.md).
"""

from __future__ import annotations

import ctypes
import pickle
import types
from dataclasses import dataclass, field

import cloudpickle

from .safe_pickle import UnsafeValue, loads_safe

PROTOCOL = 5


def dumps(obj) -> list:
    """[pickle bytes, *out-of-band buffers] for `obj`."""
    buffers: list[pickle.PickleBuffer] = []
    head = cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
    return [head, *(b.raw() for b in buffers)]


def writable(buffer) -> memoryview:
    """A writable view of a received frame, keeping the frame alive.

    Frames received without copying are read-only views; an array rebuilt on
    one would refuse `a += 1`. The memory is this process's own (libzmq gave
    the message to us), so a writable view of it is safe and saves a copy.
    """
    view = memoryview(buffer)
    if not view.readonly or view.nbytes == 0:
        return view
    try:
        address = _address_of(view)
    except ImportError:
        return view
    array = (ctypes.c_char * view.nbytes).from_address(address)
    array._keepalive = buffer  # ctypes arrays accept attributes through their __dict__
    return memoryview(array).cast("B")


def _address_of(view: memoryview) -> int:
    import numpy  # only for the buffer's address; numpy is present wherever arrays travel

    return numpy.frombuffer(view, dtype=numpy.uint8).ctypes.data


def loads(frames: list, pull: str = "all", what: str = "the value"):
    """Inverse of `dumps`. `pull="safe"`: data types only, rebuilt without running the sender's code
    (safe_pickle; an UnsafeValue names `what`); "all": anything, as pickle does (it runs the code the
    pickle names: trust the sender)."""
    head, *buffers = frames
    buffers = [writable(b) for b in buffers]
    if pull == "safe":
        return loads_safe(head, buffers, what)
    return pickle.loads(head, buffers=buffers)


@dataclass
class Packed:
    """Several named values: per-name metadata, the flat frame list, and what could not be packed."""

    meta: list[dict] = field(default_factory=list)
    frames: list = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(memoryview(f).nbytes for f in self.frames)


def describe_failure(name: str, value, exc: BaseException) -> str:
    return f"{name} ({type(value).__module__}.{type(value).__qualname__}): {type(exc).__name__}: {exc}"


def pack(namespace: dict) -> Packed:
    """Pack every name; modules travel by name, everything else by value."""
    packed = Packed()
    for name, value in namespace.items():
        if isinstance(value, types.ModuleType) and getattr(value, "__spec__", None) is not None:
            packed.meta.append({"name": name, "module": value.__spec__.name})
            continue
        try:
            frames = dumps(value)
        except Exception as exc:
            packed.errors[name] = describe_failure(name, value, exc)
            continue
        packed.meta.append({"name": name, "nframes": len(frames)})
        packed.frames.extend(frames)
    return packed


def unpack(meta: list[dict], frames: list, pull: str = "all") -> tuple[dict, dict[str, str]]:
    """Inverse of `pack`: (namespace, {name: why it could not be rebuilt}). `pull="safe"`: data types
    only (see `loads`); a module comes back by name only when it is one of the notebook's already."""
    import importlib
    import sys

    namespace, errors, pos = {}, {}, 0
    for item in meta:
        name = item["name"]
        if "module" in item:
            module = item["module"]
            if pull == "safe" and module not in sys.modules:  # importing runs the module's code
                errors[name] = (f"{name} (module {module!r}) was refused: the pull policy is 'safe', this "
                                "notebook has not imported it, and importing it would run its code; import it "
                                "here first")
                continue
            try:
                namespace[name] = importlib.import_module(module)
            except Exception as exc:
                errors[name] = f"{name}: module {module!r} cannot be imported here: {exc}"
            continue
        n = item["nframes"]
        part, pos = frames[pos:pos + n], pos + n
        try:
            namespace[name] = loads(part, pull, what=name)
        except UnsafeValue as exc:
            errors[name] = str(exc)
        except Exception as exc:
            errors[name] = f"{name}: {type(exc).__name__}: {exc}"
    return namespace, errors

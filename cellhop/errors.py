"""Every error cellhop raises on purpose, each with its HTTP status, registered by name.

One registry serves both sides of the API: the server answers an error as
`{"error": <class name>, "message": ...}` with the class's `http_status`
(api/base.py), and the HTTP clients (kernel/http_control_plane.py,
kernel/http_storage_client.py) raise the class registered under that name,
so `except ContainerNotFound` works the same embedded and over HTTP. Each
message says what was wrong and what to do next.

Every subclass of CellhopError registers itself when it is defined; those a
server can answer with are defined here, so a client has them without
importing the control plane.
"""

from __future__ import annotations

import builtins
import json

_REGISTRY: dict[str, type[CellhopError]] = {}


class CellhopError(Exception):
    """Base class of every error cellhop raises on purpose."""

    http_status = 400  # what it is over HTTP: a user's error unless a subclass says otherwise

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register(cls)


def register(cls: type[CellhopError]) -> type[CellhopError]:
    """Record `cls` under its name (CellhopError's subclasses do this when they are defined).

    Two different classes may not share a name: a client could not tell which one the server meant.
    The same class defined again (a module reloaded) replaces itself."""
    name = cls.__name__
    known = _REGISTRY.get(name)
    if known is not None and known is not cls and \
            (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"two cellhop error classes are named {name}: {known.__module__}.{known.__qualname__} "
                        f"and {cls.__module__}.{cls.__qualname__}; rename one")
    _REGISTRY[name] = cls
    return cls


def error_class(name: str | None) -> type[CellhopError] | None:
    """The error class registered under `name` (as an error answer names it), or None."""
    return _REGISTRY.get(name or "")


def registered() -> dict[str, type[CellhopError]]:
    """Name -> class of every registered error class."""
    return dict(_REGISTRY)


def http_status(exc: BaseException) -> int:
    """The HTTP status an exception is answered with: its class's `http_status` for a cellhop error,
    400 for another ValueError (a bad argument), 500 for anything else (an internal failure)."""
    if isinstance(exc, CellhopError):
        return exc.http_status
    return 400 if isinstance(exc, ValueError) else 500


def error_body(exc: BaseException) -> dict:
    """How the server answers with an error: `{"error": <class name>, "message": ...}`."""
    return {"error": type(exc).__name__, "message": str(exc)}


def answer_json(raw: bytes) -> dict:
    """An answer's JSON body; a body that is not JSON (a proxy's error page) becomes its message."""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw[:200].decode(errors="replace")}


def error_from_answer(status: int, body: dict | bytes,
                      not_found: type[CellhopError] | None = None) -> CellhopError:
    """The error an HTTP error answer stands for: the very class the server raised, by the name the
    answer gives. An answer that names no cellhop error is `not_found` for a 404 where given (on the
    containers' routes: an unknown container), else a CellhopError with its message."""
    if not isinstance(body, dict):
        body = answer_json(body)
    message = body.get("message") or f"the cellhop server answered HTTP {status}"
    cls = error_class(body.get("error"))
    if cls is not None:
        try:
            return cls(message)
        except TypeError:  # a class with other constructor arguments: keep its message
            return CellhopError(message)
    if status == 404 and not_found is not None:
        return not_found(message)
    if status == 403:
        return CellhopError(f"the cellhop server refused the request ({message}); check CELLHOP_CONTROL_TOKEN")
    return CellhopError(message)


# -- the control plane: GPUs, queueing, containers ----------------------------------------------
class GpuRequestError(CellhopError, ValueError):
    """A GPU request that this host can never satisfy (unknown type, bad count)."""


class SimulatedInventoryError(CellhopError, ValueError):
    """A malformed simulated inventory (CELLHOP_SIMULATED_GPUS or c.Cellhop.simulated_gpus)."""


class QueueTimeout(CellhopError, TimeoutError):
    """No GPU freed up for a request before its timeout."""

    http_status = 503


class QueueCancelled(CellhopError):
    """A request queued for GPUs was called off before it got them (its requester went away, or its
    container was stopped)."""

    http_status = 409


class GpuBudgetExceeded(CellhopError):
    """A user past their monthly GPU-hours: new GPU requests are refused until the budget resets (running
    work goes on)."""

    http_status = 403


class HostDirError(CellhopError, RuntimeError):
    """The configured host folder (c.Cellhop.host_dir) cannot hold the host's GPU leases."""

    http_status = 500


class ContainerStartError(CellhopError, RuntimeError):
    """A container did not reach the ready phase (an internal failure: the process died, timed out)."""

    http_status = 500


class ContainerFailedToStart(ContainerStartError):
    """A container's process ended while it was starting: what the spec asked for cannot run (an
    interpreter that is not a Python with cellhop, a crash at import). The log's end says why."""

    http_status = 422


class ContainerStopped(CellhopError):
    """A container was stopped (or deleted) before it became ready: while queued for a GPU, or starting."""

    http_status = 409


class InvalidContainerSpec(CellhopError, ValueError):
    """A container spec naming something this host cannot use (an interpreter, a working directory)."""


class ContainerNotFound(CellhopError, KeyError):
    """No container with that id is known to this control plane."""

    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "container not found"


class GpuMetricsUnavailable(CellhopError, RuntimeError):
    """NVML cannot be started on this host, so there are no live GPU metrics."""


# -- volumes and secrets -----------------------------------------------------------------------
class VolumePathError(CellhopError, ValueError):
    """A path or name that would leave a volume, or that cellhop does not accept."""


class VolumeNotFound(CellhopError, KeyError):
    http_status = 404

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "volume not found"


class VolumeFileNotFound(CellhopError, FileNotFoundError):
    http_status = 404


class VolumeInUse(CellhopError):
    """Deleting a volume that a container mounts."""

    http_status = 409


class VolumeConflict(CellhopError):
    """A path that is a folder where a file is wanted (or the reverse), or a folder that is not empty."""

    http_status = 409


class VolumeQuotaExceeded(CellhopError):
    http_status = 413


class VolumeTrashLeft(CellhopError):
    """Deleted data could not all be removed from disk; what is left is kept under a trash name."""

    http_status = 500


class SecretError(CellhopError, ValueError):
    http_status = 400


class SecretNotFound(CellhopError, KeyError):
    http_status = 404

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "secret not found"


class SecretExists(CellhopError):
    http_status = 409


class SecretOfAnotherOwner(SecretError):
    """A session-only secret used (or replaced) by someone other than the notebook that made it."""

    http_status = 403


# -- images --------------------------------------------------------------------------------------
class ImageSpecError(CellhopError, ValueError):
    """An image spec that can never build (bad argument, missing local file, unknown module)."""


class ImageNotFound(CellhopError, KeyError):
    """No built image with that key or name."""

    http_status = 404

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "image not found"


class UnknownImage(InvalidContainerSpec, ImageNotFound):
    """A container spec naming an image this control plane has not built (or no valid image key or name):
    an ImageNotFound, but the spec's fault (400), not a missing resource named by a URL (404)."""

    http_status = 400


class ImageInUse(CellhopError):
    """An image a running container uses cannot be deleted."""

    http_status = 409


class InterpreterNotFound(CellhopError, LookupError):
    """No interpreter of the asked Python version on this host."""


class StepFailed(CellhopError):
    """A build step failed: the image is not built, and nothing half-made is kept."""


class ImageBuildError(StepFailed):
    """The build failed at a step; the message names the step and what went wrong."""


class AptUnavailable(CellhopError):
    """This host has no apt (not Debian-like) or its package lists are empty."""


# -- the notebook side ---------------------------------------------------------------------------
class UnsendableVariable(CellhopError):
    """A value the cell reads cannot be sent to the container; nothing ran."""


class ContainerDied(CellhopError):
    """The container ended while a cell or call ran in it."""


class ContainerGone(ContainerDied):
    """The container had already ended when a cell or call was sent to it (an idle stop the notebook had
    not heard of yet): the request never reached it, so it may go to a fresh container as it is."""


class RemoteTimeout(CellhopError, TimeoutError):
    """A remote cell or call ran past its --timeout."""


class RemoteCancelled(CellhopError):
    """A spawned call was cancelled."""


class RemoteError(Exception):
    """An exception raised in the container, carrying the container's traceback.

    `RemoteError.of(ename, ...)` makes a subclass named like the remote
    exception (and, for a builtin one, also a subclass of it), so
    `except ZeroDivisionError` works on a remote division by zero and
    the notebook shows the remote name.
    """

    ename = "RemoteError"

    def __init__(self, evalue: str, traceback: list[str], where: str = ""):
        super().__init__(evalue)
        self.evalue = evalue
        self.remote_traceback = traceback
        self.where = where

    def render(self) -> list[str]:
        header = f"\x1b[0;31m{self.ename}\x1b[0m raised in the container{self.where}:"
        return [header, *self.remote_traceback] if self.remote_traceback else [header, f"{self.ename}: {self.evalue}"]

    _classes: dict[str, type] = {}

    @classmethod
    def of(cls, ename: str, evalue: str, traceback: list[str], where: str = "") -> RemoteError:
        klass = cls._classes.get(ename)
        if klass is None:
            bases: tuple = (cls,)
            builtin = getattr(builtins, ename, None)
            if isinstance(builtin, type) and issubclass(builtin, Exception):
                bases = (cls, builtin)
            try:
                klass = type(ename, bases, {"ename": ename})
            except TypeError:  # incompatible layouts: keep the name only
                klass = type(ename, (cls,), {"ename": ename})
            cls._classes[ename] = klass
        err = klass.__new__(klass)
        RemoteError.__init__(err, evalue, traceback, where)
        return err

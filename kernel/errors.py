"""Errors the notebook side raises; each says what happened and what to do next."""

from __future__ import annotations

import builtins

from ..server_ext.errors import CellhopError


class UnsendableVariable(CellhopError):
    """A value the cell reads cannot be sent to the container; nothing ran."""


class ContainerDied(CellhopError):
    """The container ended while a cell or call ran in it."""


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

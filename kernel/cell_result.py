"""A `%%remote` cell's last expression: the notebook cell's own result, as with a local cell.

In the container, `ResultCapture` sits on the kernel's displayhook. While a
shipped cell whose values come back runs, the value of its last expression
travels with the cell's values (under the name `RESULT`, which no Python
name can be) instead of being published as the container's `execute_result`;
the `%%remote` magic returns it, so IPython makes it the notebook cell's
`Out[n]`, `_` and `Out` get it, and the frontend shows one result.

A value that cannot travel (a widget, anything cloudpickle refuses, a value
holding a secret) is published as before, and the notebook shows it as a
display. The reply also carries the value's formatted data, so a value the
notebook refuses to rebuild (`--pull safe`) is still shown.
"""

from __future__ import annotations

import sys

RESULT = "<the cell's result>"  # its name among a cell's values: not an identifier, never a user's name


class ResultCapture:
    """Keeps the last expression's value of a shipped cell (see the module docstring)."""

    def __init__(self, displayhook, pack_value):
        self._hook = displayhook
        self._pack_value = pack_value  # value -> serialize.Packed of {RESULT: value}, secrets withheld
        self._finish = displayhook.finish_displayhook
        displayhook.finish_displayhook = self._finish_displayhook
        self._armed = False
        self._kept = None  # (packed, display message content) of the last expression

    def arm(self) -> None:
        """A shipped cell whose values come back is about to run."""
        self._armed, self._kept = True, None

    def take(self):
        """(Packed, {"data", "metadata"}) of the cell's last expression, or None; disarms."""
        kept, self._armed, self._kept = self._kept, False, None
        return None if kept is None else kept[:2]

    def _finish_displayhook(self) -> None:
        hook = self._hook
        msg = getattr(hook, "msg", None)
        exec_result = getattr(hook, "exec_result", None)
        if not (self._armed and msg and msg["content"].get("data") and exec_result is not None):
            return self._finish()
        try:
            packed = self._pack_value(exec_result.result)
        except Exception:  # it is shown as before
            return self._finish()
        if packed.errors:  # it cannot travel (or holds a secret): the container shows it
            return self._finish()
        if self._kept is not None:  # an earlier expression of the same cell (ast_node_interactivity='all')
            self._send(self._kept[2])
        sys.stdout.flush()
        sys.stderr.flush()
        content = msg["content"]
        self._kept = (packed, {"data": content["data"], "metadata": content.get("metadata") or {}}, msg)
        hook.msg = None

    def _send(self, msg) -> None:
        hook = self._hook
        hook.session.send(hook.pub_socket, msg, ident=getattr(hook, "topic", None))


def split_result(values: dict, errors: dict, reply: dict):
    """(values without the result, errors without it, the result's value or NO_RESULT, its display or None).

    The display is the container's formatting of a result the notebook could not rebuild."""
    values, errors = dict(values), dict(errors)
    value = values.pop(RESULT, NO_RESULT)
    display = reply.get("result") if errors.pop(RESULT, None) is not None else None
    return values, errors, value, display


class _NoResult:
    def __repr__(self) -> str:
        return "NO_RESULT"


NO_RESULT = _NoResult()

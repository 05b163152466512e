"""Inside a container: mask the values of its secrets in everything the kernel sends out.

The runtime puts a container's secrets in its environment and names their
keys (never the values) in CELLHOP_SECRET_KEYS. The container kernel wraps
its Session's `serialize`, which every outgoing message passes through
(streams, displays, errors, replies, comm traffic), and replaces each form of
a secret value (cellhop/masking.py: the value, its repr/JSON/HTML/URL
escapes, its base64, ...) found in a message's strings, its dict keys
included, in its content and its metadata, with *****, as CI systems do with
their logs. It also wraps `send`, whose binary buffers (comm and widget
buffers) go out beside the serialized message: a buffer holding a value's
UTF-8, UTF-16 or UTF-32 bytes (or the UTF-8 of an escaped form) has each
occurrence overwritten in place by '*' in the same encoding, so its length
and layout are kept. So a value printed by a remote cell never reaches the
notebook kernel, its frontend, or the saved notebook.

Values a cell or function sends back are pickles, not text, so they are
withheld instead: a variable (or a result) whose pickle frames carry a byte
form of a secret value stays in the container, and the notebook is told why
(array data over 16 MiB is not searched).

The forms are worked out once, when the kernel starts. What this covers and
what it does not (deliberate transformations, values under 4 characters, a
value split across writes flushed apart, two layers of escaping) is in
docs/security.md, "Secret masking".
"""

from __future__ import annotations

import inspect

from ..masking import MASK, masked_bytes, masked_values, secret_values  # noqa: F401  (secret_values: used by the container kernel)

SEARCHED_BYTES = 16 << 20
# Characters some forms hold (escapes, percent-encoding, entities): a text without one of them cannot
# hold such a form, so it is not searched for (a memchr is far cheaper than a substring search).
_MARKS = ("\\", "%", "&")


class SecretMask:
    """The container's secret values and what the kernel does with them: mask, withhold."""

    def __init__(self, values: list[str]):
        self.values = list(values)
        self.forms = masked_values(self.values)  # longest first
        # The forms grouped by the marks they hold: a text lacking a mark skips that group's forms.
        groups: dict[tuple, list[str]] = {}
        for form in self.forms:
            groups.setdefault(tuple(m for m in _MARKS if m in form), []).append(form)
        self._groups = list(groups.items())
        self._bytes = masked_bytes(self.values)

    @classmethod
    def from_environment(cls, environ=None) -> SecretMask:
        return cls(secret_values(environ))

    def __bool__(self) -> bool:
        return bool(self.forms)

    # -- text ---------------------------------------------------------------------
    def _searched(self, text: str) -> list[str]:
        """The forms that `text` could hold, given the marks it has."""
        found = []
        for marks, forms in self._groups:
            if all(m in text for m in marks):
                found.extend(forms)
        return found

    def text(self, text: str) -> str:
        """`text` with every form of every value replaced by *****."""
        for form in self._searched(text):
            if form in text:
                text = text.replace(form, MASK)
        return text

    def json(self, value):
        """A JSON-like value with each form masked in its strings and its dict keys (a copy where any
        was found; two keys masked alike become one). Its strings are searched at once, joined."""
        strings: list[str] = []
        _strings_of(value, strings)
        joined = "\0".join(strings)  # NUL: in no secret value, so no form spans two strings
        if not any(form in joined for form in self._searched(joined)):
            return value
        return self._masked(value)

    def _masked(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self._masked(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._masked(v) for v in value]
        return value

    def install(self, session) -> None:
        """Mask the secrets in every message `session` sends (nothing to do without secrets)."""
        if not self:
            return
        serialize = session.serialize

        def serialize_masked(msg, ident=None):
            masked = dict(msg)
            masked["content"] = self.json(msg.get("content", {}))
            if msg.get("metadata"):
                masked["metadata"] = self.json(msg["metadata"])
            return serialize(masked, ident)

        session.serialize = serialize_masked
        send = session.send
        signature = inspect.signature(send)

        def send_masked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            buffers = bound.arguments.get("buffers")
            message = bound.arguments.get("msg_or_type")
            if not buffers and isinstance(message, dict) and message.get("buffers"):
                buffers = message["buffers"]  # Session.send takes a message's own buffers too
            if buffers:
                bound.arguments["buffers"] = self.mask_buffers(buffers)
            return send(*bound.args, **bound.kwargs)

        session.send = send_masked

    # -- bytes --------------------------------------------------------------------
    def mask_buffers(self, buffers: list) -> list:
        """`buffers` with each one that holds a value (see holds()) replaced by a copy in which every
        byte form is overwritten by '*' in the same encoding (same length); the others untouched."""
        out = []
        for buffer in buffers:
            if self.holds([buffer]):
                data = memoryview(buffer).cast("B").tobytes()
                for form, stars in self._bytes:
                    data = data.replace(form, stars)
                buffer = data
            out.append(buffer)
        return out

    def holds(self, frames: list) -> bool:
        """Whether frames (pickles, buffers) carry a byte form of a value. Frames over 16 MiB (array
        data) are not searched."""
        for frame in frames:
            view = memoryview(frame)
            if view.nbytes > SEARCHED_BYTES:
                continue
            data = frame if isinstance(frame, bytes) else view.cast("B").tobytes()
            if any(form in data for form, _ in self._bytes):
                return True
        return False

    def withhold(self, packed):
        """`packed` (serialize.Packed) without the values that carry a secret; those are named in its errors."""
        if not self:
            return packed
        meta, frames, pos = [], [], 0
        for item in packed.meta:
            n = item.get("nframes", 0)
            part, pos = packed.frames[pos:pos + n], pos + n
            if self.holds(part):
                packed.errors[item["name"]] = (f"{item['name']} holds the value of a secret; it stays in the "
                                               "container (cellhop never sends secret values out of it)")
                continue
            meta.append(item)
            frames.extend(part)
        packed.meta, packed.frames = meta, frames
        return packed


def _strings_of(value, out: list[str]) -> None:
    """Every string of a JSON-like value, its dict keys included, appended to `out`."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                out.append(k)
            if isinstance(v, str):
                out.append(v)
            elif isinstance(v, (dict, list, tuple)):
                _strings_of(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, str):
                out.append(v)
            elif isinstance(v, (dict, list, tuple)):
                _strings_of(v, out)

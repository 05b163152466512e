"""Inside a container: mask the values of its secrets in everything the kernel sends out.

The runtime puts a container's secrets in its environment and names their
keys (never the values) in CELLHOP_SECRET_KEYS. The container kernel wraps
its Session's `serialize`, which every outgoing message passes through
(streams, displays, errors, replies, comm traffic), and replaces each
secret value found in a message's text (its content and its metadata) with
*****, as CI systems do with their logs. It also wraps `send`, whose binary
buffers (comm and widget buffers) go out beside the serialized message: a
buffer holding a secret value's UTF-8 bytes has each occurrence overwritten
with as many '*' bytes, so its length (and any binary layout) is kept. So a value printed by a remote cell never reaches the notebook
kernel, its frontend, or the saved notebook.

Limits, as for CI masking: values shorter than 4 characters are not masked,
a value split across two separate writes that are flushed apart is not
recognised. Values a cell or function sends back are pickles, not text, so
they are withheld instead: a variable (or a result) whose pickle carries a
secret value stays in the container, and the notebook is told why (array
data over 16 MiB is not searched).
"""

from __future__ import annotations

import inspect

from ..masking import mask, secret_values

SEARCHED_BYTES = 16 << 20


class SecretMask:
    """The container's secret values and what the kernel does with them: mask, withhold."""

    def __init__(self, secrets: list[str]):
        self.secrets = secrets
        self._encoded = [v.encode() for v in secrets]

    @classmethod
    def from_environment(cls, environ=None) -> SecretMask:
        return cls(secret_values(environ))

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def install(self, session) -> None:
        """Mask the secrets in every message `session` sends (nothing to do without secrets)."""
        if not self.secrets:
            return
        serialize, secrets = session.serialize, self.secrets

        def serialize_masked(msg, ident=None):
            masked = dict(msg)
            masked["content"] = mask(msg.get("content", {}), secrets)
            if msg.get("metadata"):
                masked["metadata"] = mask(msg["metadata"], secrets)
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

    def mask_buffers(self, buffers: list) -> list:
        """`buffers` with each one that holds a secret value (see holds()) replaced by a copy in which
        every occurrence is overwritten with '*' bytes of the same length; the others untouched."""
        out = []
        for buffer in buffers:
            if self.holds([buffer]):
                data = memoryview(buffer).cast("B").tobytes()
                for encoded in self._encoded:
                    data = data.replace(encoded, b"*" * len(encoded))
                buffer = data
            out.append(buffer)
        return out

    def holds(self, frames: list) -> bool:
        """Whether pickled frames carry a secret value (as its UTF-8 bytes). Out-of-band buffers over
        16 MiB (array data) are not searched."""
        for frame in frames:
            view = memoryview(frame)
            if view.nbytes > SEARCHED_BYTES:
                continue
            data = frame if isinstance(frame, bytes) else view.cast("B").tobytes()
            if any(e in data for e in self._encoded):
                return True
        return False

    def withhold(self, packed):
        """`packed` (serialize.Packed) without the values that carry a secret; those are named in its errors."""
        if not self.secrets:
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

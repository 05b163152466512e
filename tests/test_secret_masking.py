"""The container kernel's masking covers a message's metadata and its binary buffers, not only its content."""

from __future__ import annotations

import json

from jupyter_client.session import Session

from cellhop.kernel.secret_masking import SecretMask

VALUE = "sk-cellhop-9d8e7f6a5b4c"


class Stream:
    """What Session.send writes on: the frames of each message."""

    def __init__(self):
        self.sent: list[list] = []

    def send_multipart(self, frames, copy=True, track=False):
        self.sent.append([bytes(f) for f in frames])


def masked_session():
    session = Session(key=b"")
    SecretMask([VALUE]).install(session)
    return session


def test_content_and_metadata_are_masked():
    session, stream = masked_session(), Stream()
    session.send(stream, "display_data", content={"data": {"text/plain": f"token {VALUE}"}},
                 metadata={"note": f"from {VALUE}", "nested": [{"k": VALUE}]})
    frames = b"".join(stream.sent[0])
    assert VALUE.encode() not in frames
    header_at = stream.sent[0].index(b"<IDS|MSG>") + 2
    metadata = json.loads(stream.sent[0][header_at + 2])
    assert metadata == {"note": "from *****", "nested": [{"k": "*****"}]}


def test_buffers_holding_a_secret_are_masked_keeping_their_length():
    session, stream = masked_session(), Stream()
    clean = bytes(range(256))
    dirty = b"\x00\x01" + VALUE.encode() + b"\xff" + memoryview(VALUE.encode()).tobytes()
    session.send(stream, "comm_msg", content={"comm_id": "c", "data": {}},
                 buffers=[clean, memoryview(dirty)])
    frames = stream.sent[0]
    assert frames[-2] == clean  # untouched
    assert frames[-1] == b"\x00\x01" + b"*" * len(VALUE) + b"\xff" + b"*" * len(VALUE)
    assert VALUE.encode() not in b"".join(frames)
    # a message dict carrying its own buffers, as ipykernel's comms send them
    msg = session.msg("comm_msg", content={"comm_id": "c", "data": {}})
    msg["buffers"] = [VALUE.encode()]
    session.send(stream, msg)
    assert stream.sent[-1][-1] == b"*" * len(VALUE)


def test_without_secrets_nothing_is_wrapped():
    session = Session(key=b"")
    send, serialize = session.send, session.serialize
    SecretMask([]).install(session)
    assert session.send == send and session.serialize == serialize

"""The container kernel's masking covers a message's metadata and its binary buffers, not only its content,
the escaped forms of a value and dict keys, and a value's UTF-16/UTF-32 bytes in buffers."""

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


ESCAPED = "tok\\en'with\"<html>&é-8c7b"


def test_escaped_forms_and_dict_keys_are_masked():
    import html
    from urllib.parse import quote

    session, stream = Session(key=b""), Stream()
    SecretMask([ESCAPED]).install(session)
    shown = {"repr": repr(ESCAPED), "ascii": ascii(ESCAPED), "json": json.dumps({"k": ESCAPED}),
             "html": html.escape(ESCAPED), "url": quote(ESCAPED, safe="")}
    session.send(stream, "display_data", content={"data": {"text/plain": shown, ESCAPED: "a key"}},
                 metadata={f"key {ESCAPED}": 1})
    content = json.loads(stream.sent[0][stream.sent[0].index(b"<IDS|MSG>") + 5])
    assert content["data"] == {"text/plain": {"repr": "'*****'", "ascii": "'*****'", "json": '{"k": "*****"}',
                                              "html": "*****", "url": "*****"},
                               "*****": "a key"}
    metadata = json.loads(stream.sent[0][stream.sent[0].index(b"<IDS|MSG>") + 4])
    assert metadata == {"key *****": 1}


def test_wide_encodings_in_buffers_are_masked_in_their_own_encoding():
    import numpy as np

    mask = SecretMask([ESCAPED])
    array = np.array([ESCAPED, "other"])  # UTF-32 in its buffer
    utf16 = ESCAPED.encode("utf-16")  # with its byte-order mark
    assert mask.holds([array]) and mask.holds([utf16]) and mask.holds([ESCAPED.encode("utf-32-be")])
    assert not mask.holds([np.array(["other", "values"]), "nothing here".encode("utf-16")])
    masked_array, masked_utf16 = mask.mask_buffers([memoryview(array), utf16])
    back = np.frombuffer(masked_array, dtype=array.dtype)
    assert list(back) == ["*" * len(ESCAPED), "other"]  # same length, same layout: still an array of 2
    assert masked_utf16.decode("utf-16") == "*" * len(ESCAPED)


def test_text_without_a_value_is_left_as_it_is():
    mask = SecretMask([ESCAPED])
    content = {"data": {"text/plain": "ordinary output & 100% \\ fine"}, "k": [1, "x"]}
    assert mask.json(content) is content
    assert mask.text("ordinary") == "ordinary"

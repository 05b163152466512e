"""The busy and idle a container kernel publishes for shipped requests (kernel/lean_status.py), as the
control plane's activity watch reads them: a request it saw busy is always followed by its idle, in that
order, whichever thread publishes which, so a finished container is never held busy for ever."""

from __future__ import annotations

import threading
import time

from cellhop.kernel.lean_status import LeanStatus


def _request(msg_id: str) -> dict:
    return {"header": {"msg_id": msg_id, "msg_type": "cellhop_execute_request"}}


def _wait_for(told: list, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(told) < n and time.monotonic() < deadline:
        time.sleep(0.005)


def test_an_idle_never_overtakes_the_busy_of_its_request():
    told, busy_begun = [], threading.Event()

    def publish(state, parent):
        if state == "busy":  # the watch thread is slow to send it: the request ends meanwhile
            busy_begun.set()
            time.sleep(0.2)
        told.append((state, parent["header"]["msg_id"]))

    status = LeanStatus(publish, period=0.02)
    status.begin(_request("a"))
    assert busy_begun.wait(5)
    status.end(_request("a"))
    _wait_for(told, 2)
    assert told == [("busy", "a"), ("idle", "a")]


def test_an_idle_kernel_says_busy_at_once_and_a_burst_of_short_requests_only_its_idle():
    told = []
    status = LeanStatus(lambda state, parent: told.append((state, parent["header"]["msg_id"])), period=0.2)
    status.begin(_request("first"))  # after a quiet spell: busy at once, so it is never taken for idle
    assert told == [("busy", "first")]
    status.end(_request("first"))
    assert told[-1] == ("idle", "first")
    status.begin(_request("short"))  # within the burst (ended less than a period ago): nothing yet
    status.end(_request("short"))
    assert told == [("busy", "first"), ("idle", "first")]
    _wait_for(told, 3)
    assert told[2:] == [("idle", "short")]  # no busy for what was over before anyone would look

    status.begin(_request("long"))
    time.sleep(0.6)
    status.end(_request("long"))
    _wait_for(told, 5)
    assert told[3:] == [("busy", "long"), ("idle", "long")]


def test_a_publish_that_fails_does_not_silence_the_next_requests():
    told, fail = [], [True]

    def publish(state, parent):
        if fail[0]:
            fail[0] = False
            raise RuntimeError("socket closed for a moment")
        told.append((state, parent["header"]["msg_id"]))

    status = LeanStatus(publish, period=0.02)
    status.begin(_request("first"))
    time.sleep(0.1)
    status.end(_request("first"))
    status.begin(_request("second"))
    time.sleep(0.1)
    status.end(_request("second"))
    _wait_for(told, 2)
    assert ("busy", "second") in told and ("idle", "second") in told

"""Stopping a container never signals a process group by a pid its process no longer holds.

A stop asks the kernel to end, waits (a poll that sees it end reaps bubblewrap, its session's leader),
then kills what is left of the session. Once reaped, the leader's pid is free for any new process: with
pid_max 32768 (this host's), a busy machine goes round it in minutes, and a killpg of that number ended
whichever group had taken it (seen: test kernels, servers and shells of this host SIGKILLed while other
tests stopped their containers). Real containers, a real stop; os.killpg is watched, not replaced.
"""

from __future__ import annotations

import os
import signal

import pytest
from processes import wait_until

from cellhop.container import ContainerSpec, Phase
from cellhop.gpu_request import GpuRequest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def killpg_calls(monkeypatch):
    """(pid, whether the Popen that had it was reaped by then) of every killpg, the real one still sent."""
    calls, handles = [], {}
    real = os.killpg

    def watched(pid, sig):
        proc = handles.get(pid)
        calls.append((pid, sig, proc is not None and proc.returncode is not None))
        return real(pid, sig)

    monkeypatch.setattr(os, "killpg", watched)
    return calls, handles


@pytest.mark.parametrize("how", ["ends when asked", "ignores the ask", "crashed before"])
def test_a_stop_signals_no_group_by_a_reaped_pid(make_manager, killpg_calls, how):
    calls, handles = killpg_calls
    manager = make_manager(stop_grace=1.0)
    container = manager.start(ContainerSpec(gpu=GpuRequest.parse("none"), owner="tests"))
    handles[container.handle.pid] = container.handle
    if how == "ignores the ask":
        from cellhop.wire import KernelConnection

        conn = KernelConnection(container.connection_info, channels=("shell",))
        try:
            reply = conn.request("shell", "execute_request", {
                "code": "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                        "signal.signal(signal.SIGINT, signal.SIG_IGN)", "silent": False}, timeout=60)
            assert reply.content["status"] == "ok"
        finally:
            conn.close()
    elif how == "crashed before":
        os.kill(container.handle.pid, signal.SIGKILL)
        wait_until(lambda: manager.poll(container.id) is not None, 30, "the crash to be seen")
    manager.stop(container.id, grace=1.0)
    assert manager.get(container.id).phase == Phase.EXITED
    assert container.handle.returncode is not None
    stale = [(pid, sig) for pid, sig, reaped in calls if reaped]
    assert not stale, f"killpg named pids already reaped: {stale}"
    if how == "ignores the ask":  # a live session is still killed as a whole
        assert (container.handle.pid, signal.SIGKILL) in [(pid, sig) for pid, sig, _ in calls]

"""GpuMonitor in a real notebook kernel: its model as a frontend sees it over the wire (comm
messages: state updates, and custom messages carrying only each tick's new samples), as samples
arrive, as a %%remote container takes a GPU, paused and re-timed from the front end, a late front
end's hello answered with the buffered history; and the %%remote status line's way to it."""

from __future__ import annotations

import json
import time

import pytest

from kernel_fixtures import cellhop_kernel, is_status_line  # noqa: F401  (a fixture)

WIDGET_TARGET = "jupyter.widget"


READINGS = ("utilization", "memory_used", "power_w", "temperature_c")


class WidgetOnTheWire:
    """One widget's state, rebuilt from the comm messages a frontend receives; its sparklines' history
    rebuilt from the custom messages, as static/gpu_monitor.js keeps it."""

    def __init__(self, kernel, comm_id: str, state: dict):
        self.kernel = kernel
        self.comm_id = comm_id
        self.state = dict(state)
        self.updates: list[tuple[float, dict]] = []  # (arrival, state delta)
        self.custom: list[dict] = []  # every custom message's content
        self.history: dict[str, dict] = {}  # uuid -> {"time": [...], <reading>: [...]}

    def take(self, msg: dict) -> None:
        content = msg["content"]
        if msg["msg_type"] == "comm_msg" and content.get("comm_id") == self.comm_id:
            data = content.get("data") or {}
            if data.get("method") == "update":
                self.state.update(data.get("state") or {})
                self.updates.append((time.monotonic(), data.get("state") or {}))
            elif data.get("method") == "custom":
                custom = data.get("content") or {}
                self.custom.append(custom)
                if custom.get("type") == "samples":
                    for uuid, sample in custom["samples"].items():
                        h = self.history.setdefault(uuid, {"time": [], **{k: [] for k in READINGS}})
                        h["time"].append(custom["time"])
                        for k in READINGS:
                            h[k].append(sample.get(k))
                self.state["samples_seen"] = sum(c.get("type") == "samples" for c in self.custom)

    def series(self, uuid: str) -> dict:
        return self.history.get(uuid, {"time": [], **{k: [] for k in READINGS}})

    def send_custom(self, content: dict) -> None:
        """What the front end's model.send(content) puts on the wire."""
        self.kernel.send_shell("comm_msg", {"comm_id": self.comm_id,
                                            "data": {"method": "custom", "content": content}})

    def read_until(self, predicate, timeout: float = 15) -> None:
        """Apply updates as they arrive until `predicate(state)` holds."""
        def seen(msg):
            self.take(msg)
            return predicate(self.state)

        if not predicate(self.state):
            self.kernel.iopub_until(seen, timeout=timeout)

    def drain(self, seconds: float) -> None:
        """Apply whatever arrives in the next `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.take(self.kernel.kc.get_iopub_msg(timeout=left))
            except Exception:  # queue.Empty
                pass

    def send_update(self, **state) -> None:
        """What the front end sends when the user changes something (model.save_changes())."""
        self.kernel.send_shell("comm_msg", {"comm_id": self.comm_id,
                                            "data": {"method": "update", "state": state, "buffer_paths": []}})


def open_monitor(kernel, code: str) -> WidgetOnTheWire:
    ran = kernel.ok(code)
    opened = [c for c in ran.of_type("comm_open") if c.get("target_name") == WIDGET_TARGET
              and "latest" in (c["data"].get("state") or {})]
    assert len(opened) == 1, ran
    widget = WidgetOnTheWire(kernel, opened[0]["comm_id"], opened[0]["data"]["state"])
    for t, c in ran.outputs:  # updates that came within the cell
        if t == "comm_msg":
            widget.take({"msg_type": t, "content": c})
    return widget


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    cellhop_kernel.ok("%gpu H100")
    return cellhop_kernel


def test_monitor_lists_every_gpu_and_fills_with_samples(nb):
    w = open_monitor(nb, "from cellhop.widgets import GpuMonitor\nmon = GpuMonitor(interval=0.2)\nmon")
    assert [(g["index"], g["type"], g["simulated"]) for g in w.state["gpus"]] == \
        [(0, "H100", True), (1, "H100", True), (2, "A10G", True)]
    assert w.state["simulated"] is True
    assert w.state["interval"] == 0.2
    assert "history" not in w.state  # the history is no part of the model's state
    uuids = [g["uuid"] for g in w.state["gpus"]]

    w.read_until(lambda s: s.get("samples_seen", 0) >= 5 and all(len(w.series(u)["time"]) >= 5 for u in uuids))
    for u in uuids:
        latest = w.state["latest"][u]
        assert latest["utilization"] == 0 and latest["memory_used"] == 0  # free simulated cards
        assert latest["simulated"] is True
        assert "power_w" not in latest and "temperature_c" not in latest  # not given, left out
        h = w.series(u)
        assert h["time"] == sorted(h["time"])
        assert len(h["utilization"]) == len(h["time"]) == len(h["power_w"])
        assert set(h["power_w"]) == {None}
    # each custom message carries one tick's new samples: one time, one reading per GPU, no lists
    samples = [c for c in w.custom if c["type"] == "samples"]
    assert len({c["time"] for c in samples}) == len(samples)
    for c in samples:
        assert set(c["samples"]) == set(uuids)
        assert all(not isinstance(v, list) for s in c["samples"].values() for v in s.values())
    # and the state updates stay small: newest values only, never a growing history
    assert not any("history" in delta for _, delta in w.updates)
    sizes = [len(json.dumps(delta)) for _, delta in w.updates if "latest" in delta]
    assert sizes and max(sizes) < 2000, sizes
    # at 0.2 s a sample, 5 samples took about a second, not five
    times = w.series(uuids[0])["time"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 0.1 < sum(gaps) / len(gaps) < 0.6, gaps

    # a front end attaching late says hello and gets the buffered history once, as the kernel has it
    seen = len(w.custom)
    w.send_custom({"type": "hello"})
    w.read_until(lambda s: any(c["type"] == "history" for c in w.custom[seen:]))
    [answer] = [c for c in w.custom[seen:] if c["type"] == "history"]
    assert set(answer["history"]) == set(uuids)
    for u in uuids:
        got, mine = answer["history"][u], w.series(u)
        assert got["time"][:len(mine["time"])] == mine["time"]  # everything seen so far, in order
        assert set(got) == {"time", *READINGS} and len(got["utilization"]) == len(got["time"])
    nb.ok("h = mon.history\nassert set(h) == set(g['uuid'] for g in mon.gpus) and len(h[mon.gpus[0]['uuid']]['time']) >= 5")
    nb.ok("mon.close()")


def test_a_remote_container_shows_as_holder_with_its_real_load(nb):
    w = open_monitor(nb, "mon = GpuMonitor(interval=0.25)\nmon")
    ran = nb.ok("%%remote\nimport time\nt_end = time.time() + 2.5\nwhile time.time() < t_end: pass")
    container = ran.container
    assert container
    for t, c in ran.outputs:
        if t == "comm_msg":
            w.take({"msg_type": t, "content": c})
    held = [g for g in w.state["gpus"] if g["holder"] and container[:8] in g["holder"]]
    assert len(held) == 1 and held[0]["type"] == "H100", w.state["gpus"]
    # the busy loop showed: simulated utilization is the container's real CPU use
    peak = max(v or 0 for v in w.series(held[0]["uuid"])["utilization"])
    assert peak >= 30, w.series(held[0]["uuid"])
    used = [v for v in w.series(held[0]["uuid"])["memory_used"] if v]
    assert used and min(used) > 10 * 2**20  # a Python kernel's resident memory
    nb.ok("mon.close()")


def test_pause_and_interval_from_the_front_end(nb):
    w = open_monitor(nb, "mon = GpuMonitor(interval=0.2)\nmon")
    w.read_until(lambda s: s["samples_received"] >= 2)

    w.send_update(paused=True)  # the kernel does not echo a front end's own change: ask it
    deadline = time.monotonic() + 5
    while "True" not in nb.ok("print(mon.paused)").stdout:
        assert time.monotonic() < deadline, "the pause from the front end never reached the kernel"
    w.drain(0.3)  # a sample already on its way may still land
    frozen = nb.ok("print(mon.samples_received)").stdout.strip()
    w.drain(1.0)  # five intervals
    assert nb.ok("print(mon.samples_received)").stdout.strip() == frozen

    w.send_update(interval=0.5, paused=False)
    deadline = time.monotonic() + 5
    while nb.ok("print(mon.interval, mon.paused)").stdout.strip() != "0.5 False":
        assert time.monotonic() < deadline, "interval and resume from the front end never reached the kernel"
    uuid = w.state["gpus"][0]["uuid"]
    seen = len(w.series(uuid)["time"])  # (samples that came while nb.ok read its own cell's output are not)
    w.read_until(lambda s: len(w.series(uuid)["time"]) >= seen + 3, timeout=10)
    times = w.series(uuid)["time"][seen:][-3:]
    assert all(0.35 < b - a < 0.8 for a, b in zip(times, times[1:])), times
    nb.ok("mon.close()")


def test_bad_interval_says_what_is_allowed(nb):
    ran = nb.run("GpuMonitor(interval=0.01)")
    assert ran.status == "error" and "0.1 to 60" in ran.evalue, ran


def status_html(ran) -> str:
    lines = [c for t, c in ran.outputs if t in ("display_data", "update_display_data") and is_status_line(c)]
    assert "--monitor" not in lines[-1]["data"]["text/plain"]  # the plain line stays as it was
    return lines[-1]["data"]["text/html"]


def test_remote_status_line_offers_the_monitor_of_its_gpu_alone(nb):
    """Two containers of one notebook hold different GPUs: each status line's view shows exactly its own."""
    on_h100 = nb.ok("%%remote\nx = 1")
    on_a10g = nb.ok("%%remote --gpu A10G\nz = 2")
    assert on_h100.container != on_a10g.container
    for ran, kind in ((on_h100, "H100"), (on_a10g, "A10G")):
        final = status_html(ran)
        command = f"%gpu --monitor {ran.container}"
        assert command in final and f'data-cellhop-container="{ran.container}"' in final
        w = open_monitor(nb, command)
        assert [g["type"] for g in w.state["gpus"]] == [kind], w.state["gpus"]
        assert ran.container[:8] in w.state["gpus"][0]["holder"]
        assert w.state["title"] == f"GPUs of container {ran.container[:8]}"
        uuid = w.state["gpus"][0]["uuid"]
        w.read_until(lambda s, u=uuid: s["latest"].get(u) is not None)
        assert set(w.state["latest"]) == {uuid}
        nb.ok("_.close()")  # the monitor the magic returned

    # bare `%gpu --monitor`: every GPU this notebook's containers hold
    w = open_monitor(nb, "%gpu --monitor")
    assert sorted(g["type"] for g in w.state["gpus"]) == ["A10G", "H100"]
    assert w.state["title"] == "GPUs of this notebook's containers"
    nb.ok("_.close()")
    nb.ok(f"one = GpuMonitor(container={on_h100.container[:6]!r})\n"
          f"assert [g['type'] for g in one.gpus] == ['H100'], one.gpus\none.close()")


def test_cpu_only_container_offers_no_monitor(nb):
    ran = nb.ok("%%remote --gpu none\ny = 2")
    html_lines = [c["data"]["text/html"] for t, c in ran.outputs
                  if t in ("display_data", "update_display_data") and is_status_line(c)]
    assert html_lines and not any("--monitor" in h for h in html_lines)


class _FakeControl:
    """Enough of a ControlPlaneClient for GpuMonitor: hands back the callback it subscribes."""

    def __init__(self):
        self.on_event = None

    def subscribe(self, on_event, metrics_interval=None, paused=False):
        self.on_event = on_event
        return self

    def configure(self, interval):
        pass

    def pause(self):
        pass

    def resume(self):
        pass

    def close(self):
        pass

    def containers(self):
        return []


def _hello(*gpus: dict) -> dict:
    return {"type": "hello", "containers": [], "interval": 1, "paused": False,
            "gpus": {"gpus": list(gpus), "simulated": True, "reason": None, "driver_version": None,
                     "runtime": "ray"}}


def _gpu(index: int, uuid: str, **extra) -> dict:
    return {"index": index, "uuid": uuid, "type": "H100", "memory_total": 80 * 2**30, "simulated": True,
            "holder": None, **extra}


def test_monitor_carries_each_gpus_node_and_none_locally():
    """No kernel needed: the widget's model, fed a hello as the control plane sends it."""
    from cellhop.widgets.gpu_monitor import GpuMonitor

    control = _FakeControl()
    mon = GpuMonitor(control=control)
    try:
        control.on_event(_hello(_gpu(0, "GPU-a", node="127.0.0.2"), _gpu(0, "GPU-b", node="127.0.0.3")))
        assert [(g["uuid"], g["node"]) for g in mon.gpus] == [("GPU-a", "127.0.0.2"), ("GPU-b", "127.0.0.3")]
        # a container taking a GPU leaves its node as it was
        control.on_event({"type": "container", "container": {"id": "c1" * 8, "owner": "kernel 1a2b3c4d",
                                                              "phase": "ready", "node": "127.0.0.3",
                                                              "gpus": [{"uuid": "GPU-b", "node": "127.0.0.3"}]}})
        assert [(g["node"], bool(g["holder"])) for g in mon.gpus] == [("127.0.0.2", False), ("127.0.0.3", True)]
        # the local runtime: node null or absent reads as None
        control.on_event(_hello(_gpu(0, "GPU-a", node=None), _gpu(1, "GPU-b")))
        assert [g["node"] for g in mon.gpus] == [None, None]
    finally:
        mon.close()

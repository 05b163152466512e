"""Standby containers and keep-warm from a notebook (issue 14): a real notebook kernel with the embedded
control plane and real bubblewrap containers over the simulated inventory."""

from __future__ import annotations

import json
import time

import pytest
from kernel_fixtures import start_cellhop_kernel

pytestmark = pytest.mark.timeout(300)


def containers(nb) -> list[dict]:
    ran = nb.ok("import json as _j, cellhop as _c\n"
                "print(_j.dumps([{k: c[k] for k in ('id', 'label', 'phase', 'standby', 'claimed_from')}"
                " for c in _c.control_plane().containers()]))")
    return json.loads(ran.stdout)


def wait_for(nb, predicate, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = containers(nb)
        if predicate(found):
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {containers(nb)}")


def test_the_first_remote_cell_claims_the_standby_and_gpu_shows_the_pool():
    with start_cellhop_kernel(extra_arguments=("--Cellhop.standby=1", "--Cellhop.idle_timeout=3")) as nb:
        wait_for(nb, lambda cs: any(c["standby"] and c["phase"] == "ready" for c in cs), "a ready standby")
        shown = nb.ok("%gpu H100").stdout
        assert "Standby containers" in shown and "for the default image" in shown
        ran = nb.ok("%%remote\nimport os\nx = os.environ['CUDA_VISIBLE_DEVICES']")
        assert nb.ok("print(x)").stdout.strip().startswith("GPU-simulated-h100")
        mine = next(c for c in containers(nb) if c["id"].startswith(ran.container))
        assert mine["claimed_from"] and not mine["standby"]
        # keep-warm: said plainly, started ahead, never scaled down while a plain container is
        warm = nb.ok("%gpu A10G --keep-warm 1")
        said = " ".join(c.get("data", {}).get("text/plain", "") for t, c in warm.outputs if t == "display_data")
        assert "holds its GPU while idle" in said and "24 GPU-hours a day" in said
        wait_for(nb, lambda cs: any(c["label"].endswith("%%remote cells") and c["phase"] == "ready"
                                    and not c["standby"] and c["id"] != mine["id"] for c in cs),
                 "the keep-warm container")
        wait_for(nb, lambda cs: next(c for c in cs if c["id"] == mine["id"])["phase"] == "exited",
                 "the plain container's idle scaledown")
        kept = [c for c in containers(nb) if c["phase"] == "ready" and not c["standby"]]
        assert len(kept) == 1, kept
        on = nb.ok("%%remote\nimport os\ny = os.environ['CELLHOP_GPU_TYPE']")
        assert kept[0]["id"].startswith(on.container)  # the cell ran in the kept container
        nb.ok("%gpu --keep-warm 0")
        wait_for(nb, lambda cs: not any(c["phase"] == "ready" and not c["standby"] for c in cs),
                 "the keep-warm container to go once turned off")


def test_keep_warm_on_a_container_already_warm_keeps_it_past_its_idle_timeout():
    with start_cellhop_kernel(extra_arguments=("--Cellhop.idle_timeout=3",)) as nb:
        ran = nb.ok("%%remote --gpu A10G\nkept = 41")
        nb.ok("%gpu A10G --keep-warm 1")  # the cells' container for A10G is warm already: it is kept
        time.sleep(6)  # twice its idle timeout
        found = {c["id"]: c for c in containers(nb)}
        mine = next(c for i, c in found.items() if i.startswith(ran.container))
        assert mine["phase"] == "ready", found
        assert nb.ok("%%remote --gpu A10G\nprint(kept + 1)").stdout.strip() == "42"  # its state is there


def test_min_containers_starts_a_function_container_at_decoration():
    with start_cellhop_kernel(extra_arguments=("--Cellhop.idle_timeout=2",)) as nb:
        nb.ok("import cellhop\n@cellhop.remote(gpu='A10G', min_containers=1)\ndef f(x):\n    return x + 1")
        found = wait_for(nb, lambda cs: any(c["label"] == "function f" and c["phase"] == "ready" for c in cs),
                         "the function's kept container")
        kept = next(c for c in found if c["label"] == "function f")
        time.sleep(4)  # twice the idle timeout: a plain container would be stopping now
        assert next(c for c in containers(nb) if c["id"] == kept["id"])["phase"] == "ready"
        assert nb.ok("print(f.remote(1))").stdout.strip() == "2"
        nb.ok("f.shutdown()")
        wait_for(nb, lambda cs: next(c for c in cs if c["id"] == kept["id"])["phase"] == "exited",
                 "the kept container to stop with shutdown()")

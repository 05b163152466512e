"""Image layers in use are never lost: a forced rebuild neither repeats on every cell nor takes the
folders a warm container runs from; prune leaves alone what a build in progress or a live container
needs. Real builds (uv), in this process's threads."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cellhop.server_ext.images.service import Images
from cellhop.image_spec import Image

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def images():
    root = Path(tempfile.mkdtemp(prefix="ch-lay-", dir="/tmp"))
    yield Images(root / "images")
    shutil.rmtree(root, ignore_errors=True)


def _run(view: dict, code: str) -> str:
    env = {**os.environ, **view["env"], "PATH": os.pathsep.join(view["path_prepend"] + [os.environ["PATH"]])}
    env.pop("PYTHONPATH", None)
    if view["pythonpath"]:
        env["PYTHONPATH"] = os.pathsep.join(view["pythonpath"])
    out = subprocess.run([view["python"], "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class _Control:
    """The notebook's control plane, as build_for_use sees it, over a real image store."""

    def __init__(self, images: Images):
        self.images = images
        self.specs = []

    def build_image(self, spec, on_event=None, force=False):
        self.specs.append(spec)
        return self.images.build(spec, on_event=on_event, force=force)


def test_force_build_rebuilds_once_per_image_not_on_every_cell(images):
    from cellhop.kernel.image_use import build_for_use, image_named

    control = _Control(images)
    img = Image.current().run_commands("echo $RANDOM > $CELLHOP_LAYER_DIR/stamp", force_build=True)
    ns = {"img": img}
    first = build_for_use(control, image_named(type("Shell", (), {"user_ns": ns})(), "img"), in_kernel=False)
    assert first["built"] == 2  # a fresh store: the base, and the forced step
    for _ in range(2):  # the next %%remote cells: the same Image object, a cache hit each
        again = build_for_use(control, image_named(type("Shell", (), {"user_ns": ns})(), "img"), in_kernel=False)
        assert again["built"] == 0 and again["key"] == first["key"]
    assert control.specs[0]["steps"][0]["force_build"] is True
    assert all("force_build" not in s["steps"][0] for s in control.specs[1:])
    # the cell that defines it, run again: a new Image object, forced again (once)
    img2 = Image.current().run_commands("echo $RANDOM > $CELLHOP_LAYER_DIR/stamp", force_build=True)
    assert build_for_use(control, img2, in_kernel=False)["built"] == 1
    assert build_for_use(control, img2, in_kernel=False)["built"] == 0


def test_a_forced_rebuild_keeps_the_folders_a_container_uses(images):
    img = Image.current().run_commands("echo one > $CELLHOP_LAYER_DIR/stamp")
    info = images.build(img.to_json())
    warm = images.store.runtime_view(info["key"])  # what a warm container was started with
    assert _run(warm, "print('ok')") == "ok"
    rebuilt = images.build(img.to_json(), force=True)
    assert rebuilt["key"] == info["key"] and rebuilt["built"] == 2
    fresh = images.store.runtime_view(info["key"])
    assert fresh["python"] != warm["python"]  # the key now means the new folders ...
    assert _run(warm, "print('still ok')") == "still ok"  # ... and the old ones are still there
    assert _run(fresh, "print('new ok')") == "new ok"
    # while a live container uses the image, prune keeps its old folders
    pruned = images.store.prune(keep={info["key"]})
    assert pruned["layers"] == [] and Path(warm["python"]).exists()
    # once none does, they go; the present ones stay
    pruned = images.store.prune()
    assert len(pruned["layers"]) == 2 and not Path(warm["venv"]).exists()
    assert _run(images.store.runtime_view(info["key"]), "print('after prune')") == "after prune"
    assert images.build(img.to_json())["built"] == 0  # and the key is still a cache hit


def test_prune_and_delete_during_a_build_leave_its_layers(images, tmp_path, monkeypatch):
    module = tmp_path / "chlayer_mod.py"
    module.write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # the step runs sandboxed, with a private /tmp: the flag lies where the sandbox sees the host (read-only)
    flag_dir = Path(tempfile.mkdtemp(prefix="chlayer-", dir="/var/tmp"))
    flag_dir.chmod(0o755)  # the step runs as the sandbox's unprivileged user
    flag = flag_dir / "go"
    img = (Image.current().add_local_python_source("chlayer_mod")
           .run_commands(f"i=0; while [ ! -e {flag} ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done"))
    other = images.build(Image.current().env({"CH_OTHER": "1"}).to_json())  # an image to delete meanwhile
    events, result = [], {}

    def build():
        try:
            result["info"] = images.build(img.to_json(), on_event=events.append)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    builder = threading.Thread(target=build)
    builder.start()
    try:  # the step waits for the flag (2 min at most), so a failed check here leaves no loop behind
        deadline = time.monotonic() + 60
        while not any(e.get("event") == "step" and e.get("index") == 2 and e.get("state") == "building"
                      for e in events) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert builder.is_alive(), result
        plan = next(e for e in events if e["event"] == "plan")["steps"]
        done_before = [s["key"] for s in plan[:2]]  # base and add_local_python_source: built, no record yet
        assert all(images.store.layer(k) is not None for k in done_before)
        removed = images.prune()["layers"] + images.delete(other["key"])["layers_removed"]
        assert not set(removed) & set(done_before), removed
        assert all(images.store.layer(k) is not None for k in done_before)
    finally:
        flag.touch()
        builder.join(120)
        shutil.rmtree(flag_dir, ignore_errors=True)
    assert "info" in result, result
    info = result["info"]
    assert _run(images.store.runtime_view(info["key"]), "import chlayer_mod; print(chlayer_mod.VALUE)") == "42"
    assert images.prune()["layers"] == []  # recorded now: nothing of it goes


def test_a_build_step_leaving_a_tree_thousands_deep_is_measured_and_deleted(images):
    """A build step runs code the image's author chose: a folder chain 1,500 deep in its layer must not
    break the size the store records, nor deleting the image (Python's recursive walkers stop near 1,000)."""
    chain = "i=0; while [ $i -lt 1500 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done; echo x > leaf"
    info = images.build(Image.current().run_commands(chain).to_json())
    layers = images.store.root / "layers"
    deleted = images.delete(info["key"])  # a RecursionError (a 500 over the API) before
    assert deleted["layers_removed"], deleted
    left = [p.name for p in layers.iterdir() if any(p.name.startswith(k) for k in deleted["layers_removed"])]
    assert left == [], left

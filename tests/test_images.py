"""Images, built for real with uv against a local package index: cache hits, partial rebuilds,
concurrent builds across processes, failing and interrupted builds, listing, delete and prune."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from image_index import make_index
from processes import wait_until

from cellhop.errors import ImageBuildError
from cellhop.errors import InterpreterNotFound
from cellhop.server_ext.images.service import Images
from cellhop.errors import ImageSpecError
from cellhop.image_spec import Image


@pytest.fixture(scope="module")
def index():
    root = Path(tempfile.mkdtemp(prefix="ch-idx-", dir="/tmp"))
    yield make_index(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def images():
    root = Path(tempfile.mkdtemp(prefix="ch-img-", dir="/tmp"))
    yield Images(root / "images")
    shutil.rmtree(root, ignore_errors=True)


def _build(images, image, force=False):
    events = []
    info = images.build(image.to_json(), on_event=events.append, force=force)
    return info, events


def _states(events) -> dict[int, str]:
    """The last state of each step, as the events tell it."""
    states = {}
    for e in events:
        if e["event"] == "plan":
            states.update({s["index"]: s["state"] for s in e["steps"]})
        elif e["event"] == "step":
            states[e["index"]] = e["state"]
    return states


def _python_says(images, info, code: str) -> str:
    view = images.store.runtime_view(info["key"])
    env = {**os.environ, **view["env"], "PATH": os.pathsep.join(view["path_prepend"] + [os.environ["PATH"]])}
    if view["pythonpath"]:
        env["PYTHONPATH"] = os.pathsep.join(view["pythonpath"])
    out = subprocess.run([view["python"], "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_build_cache_hit_and_partial_rebuild(images, index):
    image = (Image.current().pip_install("chtest-beta", index_url=index.url)
             .env({"CHTEST_MODE": "fast"}).run_commands("echo first > $CELLHOP_LAYER_DIR/marker"))
    info, events = _build(images, image)
    assert info["built"] == 4 and _states(events) == {0: "done", 1: "done", 2: "done", 3: "done"}
    # uv resolved beta's dependency from the local index; the image's Python sees both
    assert info["packages"]["chtest-beta"] == "1.0" and info["packages"]["chtest-alpha"] == "1.1"
    assert _python_says(images, info, "import chtest_beta, os; print(chtest_beta.alpha_version(), "
                                      "os.environ['CHTEST_MODE'])") == "1.1 fast"
    # and the notebook's own packages (the base is the notebook's environment)
    assert _python_says(images, info, "import cloudpickle; print(cloudpickle.__version__)") == \
        __import__("cloudpickle").__version__

    t0 = time.perf_counter()
    again, events = _build(images, image)
    hit = time.perf_counter() - t0
    assert again["key"] == info["key"] and again["built"] == 0
    assert set(_states(events).values()) == {"cached"}
    assert hit < 0.25, f"a cache hit took {hit * 1000:.0f} ms"

    changed = image.run_commands("echo second")  # a new last step: only it builds
    info2, events = _build(images, changed)
    assert info2["built"] == 1 and _states(events) == {0: "cached", 1: "cached", 2: "cached", 3: "cached", 4: "done"}
    replaced = (Image.current().pip_install("chtest-beta", index_url=index.url)
                .env({"CHTEST_MODE": "fast"}).run_commands("echo other"))  # the last step changed
    info3, events = _build(images, replaced)
    assert info3["built"] == 1 and _states(events)[3] == "done" and _states(events)[1] == "cached"

    forced, events = _build(images, image, force=True)
    assert forced["key"] == info["key"] and forced["built"] == 4

    listed = {i["key"]: i for i in images.list()}
    assert set(listed) == {info["key"], info2["key"], info3["key"]}
    assert all(i["size"] > 0 and i["last_used"] for i in listed.values())
    log = images.log(info["key"])
    assert "=> Step 2: pip_install('chtest-beta')" in log and "chtest-alpha==1.1" in log


def test_local_files_are_part_of_the_key(images, index, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("one")
    image = Image.current().add_local_dir(data, "data")
    first, _ = _build(images, image)
    assert _build(images, image)[0]["built"] == 0
    (data / "a.txt").write_text("two")
    second, _ = _build(images, image)
    assert second["key"] != first["key"] and second["built"] == 1
    view = images.store.runtime_view(second["key"])
    (src, dest), = view["mounts"]
    assert dest == "data" and Path(src, "a.txt").read_text() == "two"


def test_failing_steps_fail_the_build_at_that_step_and_keep_nothing(images, index):
    good = Image.current().pip_install("chtest-alpha==1.0", index_url=index.url)
    with pytest.raises(ImageBuildError, match=r"step 2 pip_install\('chtest-does-not-exist'\).*chtest-does-not-exist"):
        _build(images, good.pip_install("chtest-does-not-exist", index_url=index.url))
    events = []
    with pytest.raises(ImageBuildError, match=r"step 2 run_commands\('echo about to fail; exit 3'\).*exit code 3"):
        images.build(good.run_commands("echo about to fail; exit 3").to_json(), on_event=events.append)
    assert _states(events) == {0: "cached", 1: "cached", 2: "failed"}
    assert any(e["event"] == "log" and e["line"] == "about to fail" for e in events)
    assert [e for e in events if e["event"] == "failed"][0]["index"] == 2
    layers = images.store.layers
    assert not [p for p in layers.iterdir() if p.name.startswith(".")], "a failed build left a temporary layer"
    assert len(list(layers.iterdir())) == 2  # the base and the good step, nothing of the failing ones
    assert _build(images, good)[0]["built"] == 0


def test_bad_specs_are_clear_errors(images):
    with pytest.raises(InterpreterNotFound, match=r"no Python 3\.99 interpreter on this host.*downloads no"):
        images.build(Image.python("3.99").to_json())
    with pytest.raises(ImageSpecError, match="3.10 or newer"):
        Image.python("3.8")
    with pytest.raises(ImageSpecError, match="like '3.11'"):
        Image.python("three")
    with pytest.raises(ImageSpecError, match="no such file"):
        Image.current().requirements("/nonexistent/requirements.txt")
    with pytest.raises(ImageSpecError, match="cannot import 'no_such_module_xyz'"):
        Image.current().add_local_python_source("no_such_module_xyz")
    with pytest.raises(ImageSpecError, match="must be under /tmp"):
        Image.current().add_local_dir("/etc", "/opt/x")
    with pytest.raises(ImageSpecError, match="unknown operation"):
        Image.from_json({"base": {"kind": "current", "python": sys.executable}, "steps": [{"op": "rm_rf"}]})


_BUILD_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from cellhop.server_ext.images.service import Images
    from cellhop.image_spec import Image
    root, spec = sys.argv[1], json.loads(sys.argv[2])
    events = []
    info = Images(Path(root)).build(spec, on_event=events.append)
    print(json.dumps({"key": info["key"], "built": info["built"], "events": events}))
""")


def _build_in_process(root: Path, image: Image) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(root), json.dumps(image.to_json())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_identical_builds_in_two_processes_build_once(images, index, tmp_path):
    # (a build step runs sandboxed and cannot write a host file: which process ran it, its events say)
    image = Image.current().pip_install("chtest-alpha==1.0", index_url=index.url).run_commands(
        "echo building slowly; sleep 2; echo finished")
    a = _build_in_process(images.store.root, image)
    b = _build_in_process(images.store.root, image)
    results = []
    for proc in (a, b):
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["key"] == results[1]["key"]
    last = images.builder.plan(image)[-1].index
    ran = [r for r in results
           if any(e["event"] == "step" and e["state"] == "building" and e["index"] == last for e in r["events"])]
    assert len(ran) == 1, "the step ran more than once"
    assert sorted(r["built"] for r in results)[1] >= 1  # one process built the last layer...
    watcher = [r for r in results if any(e["event"] == "step" and e["state"] == "waiting" for e in r["events"])]
    assert watcher, "neither process watched the other's build"
    lines = [e["line"] for e in watcher[0]["events"] if e["event"] == "log"]
    assert "finished" in lines  # ...and the other followed its log
    assert _build(images, image)[0]["built"] == 0


def test_interrupted_build_leaves_nothing_half_made(images, index, tmp_path):
    # the step runs sandboxed: it writes only its layer folder, and sees the layers folder read-only
    layers = images.store.layers
    layers.mkdir(parents=True, exist_ok=True)
    release = layers / f".release-{os.getpid()}"
    image = Image.current().run_commands(f"echo started > $CELLHOP_LAYER_DIR/started; "
                                         f"test -f {release} || sleep 60; echo ok")
    proc = _build_in_process(images.store.root, image)
    wait_until(lambda: list(layers.glob(".tmp-*/started")), timeout=30,
               what="the build to reach its run_commands step")
    proc.send_signal(signal.SIGKILL)  # the builder dies mid-step: its sandbox dies with it
    proc.wait()
    wait_until(lambda: not [p for p in os.listdir("/proc") if p.isdigit() and str(release).encode() in
                            _cmdline(p)], timeout=15, what="the killed build's command to be gone")
    last_key = images.builder.plan(image)[-1].key
    assert images.store.layer(last_key) is None and not (layers / last_key).exists(), \
        "a killed build left its layer in the cache"
    assert list(layers.glob(f".tmp-{last_key}-*")), "expected the killed build's temporary folder"
    # the lock died with the builder; the next build starts over and removes the leftovers
    release.write_text("")
    info, events = _build(images, image)
    release.unlink()
    assert info["key"] == last_key and _states(events)[1] == "done"
    assert not list(layers.glob(".tmp-*"))


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_keyboard_interrupt_in_process_removes_the_temporary_layer(images):
    # The interrupt comes once the run_commands step itself runs (it says so in its layer), however long
    # the steps before it take on a loaded host; the step would run for minutes if it did not come.
    image = Image.current().run_commands("echo started > $CELLHOP_LAYER_DIR/started; sleep 240")
    import threading

    layers = images.store.layers
    missed = []

    def interrupt_once_started():
        try:
            wait_until(lambda: layers.exists() and list(layers.glob(".tmp-*/started")), timeout=150,
                       what="the build to reach its run_commands step")
        except Exception as exc:  # noqa: BLE001 - said by the test below; interrupt anyway so it ends
            missed.append(exc)
        # as Ctrl-C reaches it: in the main thread (a signal to the process may land on any of its threads,
        # and then the main thread's blocked read of the step's output goes on until the step prints again)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    # Ctrl-C as Python answers it by default, whatever this process started with: a pytest started in the
    # background by a non-interactive shell (`cmd &`, as a CI script may) inherits SIGINT ignored, which Python
    # keeps, and then the signal is swallowed and the step runs its 240 s; what was there is said if it differed
    left = signal.signal(signal.SIGINT, signal.default_int_handler)
    if left is not signal.default_int_handler:
        print(f"test_images: SIGINT's handler was {left!r} before this test", file=sys.stderr)
    threading.Thread(target=interrupt_once_started, daemon=True).start()
    events = []
    try:
        with pytest.raises(KeyboardInterrupt):
            images.build(image.to_json(), on_event=events.append)
    finally:
        signal.signal(signal.SIGINT, left)
    assert not missed, missed
    assert [e for e in events if e["event"] == "failed"][0]["error"] == "interrupted"
    assert not list(layers.glob(".tmp-*"))
    assert images.store.layer(images.builder.plan(image)[-1].key) is None


def test_delete_and_prune(images, index):
    shared = Image.current().pip_install("chtest-alpha==1.0", index_url=index.url)
    a, _ = _build(images, shared.env({"WHICH": "a"}))
    b, _ = _build(images, shared.env({"WHICH": "b"}))
    result = images.delete(a["key"])
    assert result["deleted"] == a["key"] and result["layers_removed"] == [a["key"]]  # shared layers stay
    assert [i["key"] for i in images.list()] == [b["key"]]
    assert _build(images, shared.env({"WHICH": "b"}))[0]["built"] == 0
    (images.store.layers / ".tmp-deadbeefdeadbeef-0000").mkdir()  # a killed build's leftover
    assert images.prune()["layers"] == []
    assert not (images.store.layers / ".tmp-deadbeefdeadbeef-0000").exists()
    pruned = images.prune(unused_for=0)
    assert pruned["images"] == [b["key"]] and len(pruned["layers"]) == 3
    assert images.list() == [] and not list(images.store.layers.iterdir())


def test_a_container_starts_in_an_image_by_key_or_by_name(make_manager, index):
    from cellhop.container import ContainerSpec
    from cellhop.errors import ImageNotFound

    state = Path(tempfile.mkdtemp(prefix="ch-ist-", dir="/tmp"))
    try:
        manager = make_manager(state_dir=str(state))
        images = Images(state / "images")
        image = Image.current().pip_install("chtest-alpha==1.0", index_url=index.url).env({"CHTEST": "named"})
        info = images.build(image.named("alpha-env").to_json())
        for ref in (info["key"], "alpha-env"):
            container = manager.start(ContainerSpec(gpu="none", owner="test", image=ref))
            pid = manager.runtime._kernel_pid(container)
            environ = dict(item.split("=", 1) for item in
                           Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            assert environ["CELLHOP_IMAGE"] == info["key"] and environ["CHTEST"] == "named"
            assert cmdline[0] == images.store.runtime_view(info["key"])["python"]
            assert container.to_dict()["image"] == ref
            manager.stop(container.id)
        with pytest.raises(ImageNotFound, match="no image 'missing-env'"):  # a user error, before queueing
            manager.start(ContainerSpec(gpu="none", owner="test", image="missing-env"))
        assert [c for c in manager.list() if c.phase.value != "exited"] == []
    finally:
        shutil.rmtree(state, ignore_errors=True)

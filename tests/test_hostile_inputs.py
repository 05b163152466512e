"""Hostile input, thrown at a real server (jupyter_server with cellhop) and at the magics of a real
kernel: paths, names, bodies, specs, query arguments and magic options, as an attacker holding a
kernel's token would send them.

Every input must be refused with a clear 4xx (a JSON answer with an error kind and a message), or be
harmless and accepted; none may give a 5xx or hang, no file outside a volume may change, and no
container may be left running or holding a GPU. The counts (tried, refused with a clear 4xx,
accepted) are printed at the end of the pytest run, under "counts".
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError
from test_volumes_traversal import HOSTILE

from kernel_fixtures import cellhop_kernel  # noqa: F401  (a pytest fixture)

pytestmark = pytest.mark.timeout(600)

BIDI = "\u202e"
TIMEOUT = 30  # seconds one request may take; longer counts as hung


class Tally:
    """How each hostile input was answered, per kind of input."""

    def __init__(self):
        self.counts: dict[str, Counter] = {}

    def add(self, kind: str, outcome: str) -> None:
        self.counts.setdefault(kind, Counter())[outcome] += 1

    def line(self) -> str:
        total = sum((c for c in self.counts.values()), Counter())
        kinds = ", ".join(f"{k} {sum(c.values())}" for k, c in self.counts.items())
        return (f"hostile inputs: {sum(total.values())} tried, {total['refused']} refused with a clear 4xx, "
                f"{total['accepted']} accepted (harmless), {total['5xx']} gave a 5xx, {total['hung']} hung, "
                f"{total['unclear']} refused without a clear message ({kinds})")


@pytest.fixture(scope="module")
def tally(request):
    """The module's tally; its line goes to the run's "counts" section (conftest's summary_lines), or
    straight to the terminal where that fixture is missing."""
    try:
        lines = request.getfixturevalue("summary_lines")
    except pytest.FixtureLookupError:
        lines = None
    t = Tally()
    yield t
    if lines is not None:
        lines.append(t.line())
    elif (reporter := request.config.pluginmanager.get_plugin("terminalreporter")) is not None:
        reporter.write_line("\n" + t.line())


@pytest.fixture
def jp_server_config(runtime_root):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": "H100:1,A10G:1", "runtime_root": str(runtime_root), "idle_timeout": 0,
                    "state_dir": str(runtime_root / "state"), "queue_timeout": 5},
    }


@pytest.fixture
def control_plane(jp_serverapp):
    return jp_serverapp.web_app.settings["cellhop_control_plane"]


@pytest.fixture
def world(control_plane, runtime_root, jp_root_dir):
    """A volume with a file and a link a container could have made, and folders outside every volume that
    must never change; at the end nothing may run or hold a GPU."""
    control_plane.volumes.create("v")
    control_plane.volumes.put("v", "ok.txt", b"inside")
    outside = runtime_root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside")
    control_plane.outside = outside
    restore(control_plane)
    before = snapshot(outside), snapshot(jp_root_dir)
    yield control_plane
    settle(control_plane)
    assert (snapshot(outside), snapshot(jp_root_dir)) == before, "a file outside a volume changed"
    assert sorted(os.listdir(control_plane.volumes.root)) == ["v"]
    assert all(h is None for h in control_plane.manager.scheduler.holders().values())


def snapshot(folder: Path) -> list:
    """Every path under `folder` with its content (links as where they point)."""
    out = []
    for d, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(d) / name
            content = (os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else None)
            out.append((str(path), content))
    return sorted(out, key=lambda x: x[0])


def restore(control_plane) -> None:
    """Put volume v back as it was (only ok.txt and the link esc) after an input that was accepted."""
    volumes = control_plane.volumes
    for entry in volumes.ls("v"):
        if entry["path"] not in ("ok.txt", "esc"):
            volumes.rm("v", entry["path"], recursive=True)  # the listed (escaped) form names it back
    if [e["path"] for e in volumes.ls("v") if e["path"] == "ok.txt"] == [] or \
            b"".join(volumes.read_chunks("v", "ok.txt")) != b"inside":
        volumes.put("v", "ok.txt", b"inside")
    link = volumes.data_path("v") / "esc"
    if not link.is_symlink():
        link.symlink_to(control_plane.outside)


def settle(control_plane, keep: str | None = None) -> None:
    """Stop what an accepted input started (but container `keep`), and delete the volumes it made."""
    for container in control_plane.manager.list():
        if container.phase.value != "exited" and container.id != keep:
            control_plane.manager.stop(container.id)
    for name in control_plane.volumes.names():
        if name != "v":
            control_plane.volumes.delete(name)


async def throw(jp_fetch, tally, kind, method, path, body=None, params=None, headers=None) -> int:
    """Send one hostile request; record and check how it was answered; returns its status."""
    if params:  # names as bytes a container made (lone surrogates) go out as those bytes
        params = {k: v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v for k, v in params.items()}
    kwargs = {"method": method, "raise_error": False, "params": params, "request_timeout": TIMEOUT,
              "headers": dict(headers or {})}
    if body is not None or method in ("POST", "PUT"):
        kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body if body is not None else {})
    try:
        r = await jp_fetch("cellhop", "api", *path.split("/"), **kwargs)
    except HTTPClientError as exc:  # a timeout: the request hung
        tally.add(kind, "hung")
        raise AssertionError(f"{method} {path} {params or ''} hung ({exc})") from None
    status = r.code
    if status >= 500:
        tally.add(kind, "5xx")
        raise AssertionError(f"{method} {path} {params or ''} {str(body)[:200]!r} gave {status}: {r.body[:500]!r}")
    if status >= 400:
        reply = json.loads(r.body)
        clear = bool(reply.get("error")) and len(reply.get("message", "")) > 10
        tally.add(kind, "refused" if clear else "unclear")
        assert clear, (method, path, reply)
    else:
        tally.add(kind, "accepted")
    return status


# -- paths inside a volume ---------------------------------------------------------------------------
MORE_PATHS = ["\\x2e\\x2e", "a/\\x2e\\x2e/b", "\\x2fetc", "a\\x00b", "a\\", "\\x", "\\xzz", "a\\b", "%2e%2e/x",
              "esc/secret.txt", "esc", "ok.txt/x", "x" * 5000, "\\xff" * 300, "\udcff\udcfe", BIDI + "gpj.exe",
              "\u2028line", "a\u0000", "\ud800", ".\\x2e/x", "con/\\x0d\\x0a"]


async def test_hostile_paths_on_every_volume_route(jp_fetch, world, tally):
    for path in HOSTILE + MORE_PATHS:
        attempts = [("PUT", "volumes/v/upload", b"pwned", {"path": path}),
                    ("GET", "volumes/v/download", None, {"path": path}),
                    ("GET", "volumes/v/files", None, {"path": path}),
                    ("DELETE", "volumes/v/files", None, {"path": path, "recursive": "1"}),
                    ("POST", "volumes/v/mv", {"src": path, "dst": "moved"}, None),
                    ("POST", "volumes/v/mv", {"src": "ok.txt", "dst": path}, None),
                    ("POST", "volumes/v/mkdir", {"path": path}, None)]
        for method, route, body, params in attempts:
            if await throw(jp_fetch, tally, "paths", method, route, body, params) < 400:
                restore(world)  # accepted: it stayed inside the volume (checked at the end); undo it
    assert b"".join(world.volumes.read_chunks("v", "ok.txt")) == b"inside"


# -- names: volumes, secrets, images, container ids ----------------------------------------------------
HOSTILE_NAMES = ["..", ".hidden", "a/b", "", " ", "x" * 64, "name.", "-rf", "a\x00b", "ab\n", "a\nb", "tab\t",
                 "evil" + BIDI + "gpj", "\u2066iso", "zero\u200bwidth", "\u0430dmin", "caf\u00e9", "a b", "a\\b",
                 "CON", "x" * 10000, "\udcff", "%2e%2e", "*", "$(id)"]


async def test_hostile_names_for_volumes_secrets_and_images(jp_fetch, world, tally):
    for name in HOSTILE_NAMES:
        for method, route, body in [
                ("POST", "volumes", {"name": name}),
                ("POST", "secrets", {"name": name, "values": {"K": "v"}}),
                ("POST", "images", {"spec": {"name": name, "base": "no-such-base"}}),
                ("POST", "containers", {"spec": {"gpu": "none", "owner": "t", "volumes": [f"{name}:/data"]}}),
                ("POST", "containers", {"spec": {"gpu": "none", "owner": "t", "secrets": [name]}})]:
            status = await throw(jp_fetch, tally, "names", method, route, body)
            assert status >= 400 or (name.isascii() and name.isprintable() and name.strip()), (route, name)
            settle(world)
    for name in ("..", "x" * 300, "%00", "%E2%80%AE", "%FF", "a%0Ab"):
        for route in (f"volumes/{name}", f"volumes/{name}/files", f"secrets/{name}", f"containers/{name}",
                      f"containers/{name}/logs", f"images/{name}"):
            await throw(jp_fetch, tally, "names", "GET", route)
    assert all(s["name"].isascii() and s["name"].isprintable() for s in world.secrets.list())


# -- bodies: every POST and PUT route ------------------------------------------------------------------
def _bodies() -> list:
    deep_list = "[" * 100_000 + "]" * 100_000
    deep_dict = '{"a":' * 5000 + "1" + "}" * 5000
    return [deep_list, deep_dict, "[" * 40 + "]" * 40, "{" * 3, "NaN", '{"spec": NaN}', '{"a": Infinity}',
            b"\xff\xfe{}", "", "null", "[]", '"text"', "1e400", '{"spec": {"gpu": "none", "env": ' + deep_dict + "}}",
            json.dumps({"spec": {"gpu": "none"}, "pad": "x" * (2 << 20)}), json.dumps({"x": [[[[[[[[[[[[]]]]]]]]]]]]}),
            '{"spec": null}', "{}"]


def _is_object(body) -> bool:
    """Whether the server reads `body` as a JSON object (the stop route would then stop the container)."""
    from tornado.web import HTTPError

    from cellhop.server_ext.api.base import parse_json

    try:
        return isinstance(parse_json(body or b"{}"), dict)
    except HTTPError:
        return False


async def test_hostile_bodies_on_every_post_route(jp_fetch, world, tally):
    await throw(jp_fetch, tally, "bodies", "POST", "containers", {"spec": {"gpu": "none", "owner": "t"}})
    [container] = world.manager.list()
    routes = ["containers", "volumes", "volumes/v/mv", "volumes/v/mkdir", "secrets", "images", "images/prune",
              f"containers/{container.id}/stop"]
    for route in routes:
        for body in _bodies():
            if route.endswith("/stop") and _is_object(body):
                continue  # a plain stop: fine, but it would end the container the route needs
            await throw(jp_fetch, tally, "bodies", "POST", route, body)
            settle(world, keep=container.id)
    assert container.phase.value == "ready"
    await throw(jp_fetch, tally, "bodies", "POST", f"containers/{container.id}/stop", "{}")


# -- container specs ------------------------------------------------------------------------------------
def _specs(root_dir: Path, runtime_root: Path) -> list[dict]:
    from jupyter_core.paths import jupyter_runtime_dir

    workdirs = ["/", "/etc", "/proc/self/root", jupyter_runtime_dir(), str(runtime_root), str(runtime_root / "state"),
                "relative", "", "a\x00b", str(root_dir / "link-out"), str(root_dir) + "/../..", "/dev/shm/x",
                "~", str(root_dir / ("x" * 300))]
    envs = [{"A\x00B": "1"}, {"A=B": "1"}, {"": "1"}, {"1A": "1"}, {"PYTHONHOME": "/x"}, {"PYTHONPATH": "/x"},
            {"PYTHONSTARTUP": "/x"}, {"LD_PRELOAD": "/x.so"}, {"LD_LIBRARY_PATH": "/x"}, {"GLIBC_TUNABLES": "x"},
            {"CUDA_VISIBLE_DEVICES": "0,1"}, {"A": "x\x00y"}, {"A": 1}, {"A": None}, {"A": ["x"]},
            {"BIG": "x" * 200_000}, {f"V{i}": "x" * 100 for i in range(2000)}, ["A=1"], "A=1"]
    specs = [{"workdir": w} for w in workdirs] + [{"env": e} for e in envs]
    specs += [{"memory": m} for m in (1, 0, -1, "1", "9" * 400, int("9" * 400), "1e400", "NaN", "8Q", "", [],
                                      True, 2**62, "1.5.5G", "  ")]
    specs += [{"cpus": c} for c in (0, -1, 10**30, 1.5, "2", True, None)]
    specs += [{"idle_timeout": t} for t in (-1, 10**300, "soon", 1e40)]
    specs += [{"queue_timeout": t} for t in (-5, 10**20, [1])]
    specs += [{"python": p} for p in ("/bin/false", "/bin/true", "a\x00b", "", "/etc/passwd", "/nonexistent",
                                      "../../bin/sh", "x" * 5000)]
    specs += [{"gpu": g} for g in ("H100:" + "9" * 400, "H100:-1", "H100:0", BIDI, "H100," * 5000, ":", "any:0",
                                   "A10G:2", 5, None, ["H100"])]
    specs += [{"volumes": v} for v in (["../x:/data"], ["v:/"], ["v:/proc"], ["v:relative"], ["v:/data:rx"],
                                       [{"name": "v", "path": "/data", "read_only": "no"}], ["v:/data", "v:/data"],
                                       "v:/data\x00", [{"name": "v", "path": "/a/../etc"}], [1])]
    specs += [{"owner_pid": p} for p in (0, -1, 2**40, "1")]
    specs += [{"image": i} for i in ("../x", "no-such", BIDI, "x" * 300)]
    specs += [{"colour": "red"}, {"caller": "kernel:other"}, {"secrets": "notalist"}, {"label": ["x"]}]
    return specs


HARMLESS = ({"gpu": None}, {"cpus": None}, {"python": ""}, {"memory": ""})  # the defaults: a plain container


async def test_hostile_container_specs(jp_fetch, world, tally, jp_root_dir, runtime_root):
    (jp_root_dir / "link-out").symlink_to("/")
    try:
        for spec in _specs(jp_root_dir, runtime_root):
            body = {"spec": {"owner": "t", "gpu": "none", **spec}}
            status = await throw(jp_fetch, tally, "specs", "POST", "containers", body)
            assert status >= 400 or spec in HARMLESS, (spec, status)
            settle(world)
    finally:
        (jp_root_dir / "link-out").unlink()
    for tail in ("abc", "0", "-3", "9" * 400, "\uff11", "", "1.5", "1e3"):
        await throw(jp_fetch, tally, "specs", "GET", "containers/nope/logs", params={"tail": tail})
    for quota in ("9" * 400, -1, "1e400", "NaN", [], {}, True, "5X", 10**30, "-5G"):
        await throw(jp_fetch, tally, "specs", "POST", "volumes", {"name": "q2", "quota": quota})


def test_the_embedded_control_plane_lets_a_spec_work_only_below_its_starting_folder(make_manager, tmp_path,
                                                                                    monkeypatch, tally):
    """No server, no root_dir: a kernel's own control plane allows the folder it started in, and below."""
    from cellhop.container import ContainerSpec
    from cellhop.errors import InvalidContainerSpec

    start = tmp_path / "project"
    (start / "sub").mkdir(parents=True)
    monkeypatch.chdir(start)
    manager = make_manager(workdir_roots=[])
    for fine in (start, start / "sub", start / "new"):
        spec = ContainerSpec(gpu="none", owner="t", workdir=str(fine))
        manager.check_spec(spec)
        assert spec.workdir == fine.resolve()
    for bad in ("/", tmp_path, start / ".." / "elsewhere", manager.root, "/etc/ssh"):
        with pytest.raises(InvalidContainerSpec, match=re.escape(f"Allowed: folders containers may work in: {start}")):
            manager.check_spec(ContainerSpec(gpu="none", owner="t", workdir=str(bad)))
        tally.add("specs", "refused")


# -- magics at a real kernel -------------------------------------------------------------------------------
BAD_MAGICS = ["%gpu --cpus 0", "%gpu --cpus -1", "%gpu --cpus abc", "%gpu --cpus 99999999999999999999",
              "%gpu --timeout -1", "%gpu --timeout 0", "%gpu --timeout nan", "%gpu --timeout inf",
              "%gpu --timeout 1e400", "%gpu --idle-timeout -5", "%gpu --idle-timeout nan", "%gpu --memory 1",
              "%gpu --memory 0", "%gpu --memory lots", "%gpu --memory 99999999999P", "%gpu --volume ../x:/data",
              "%gpu --volume v:/proc", "%gpu --volume v:/", "%gpu --secret 'a b'", "%gpu --secret ..",
              f"%gpu --secret evil{BIDI}", "%gpu H100:0", "%gpu H100:-1", f"%gpu {BIDI}", "%gpu --image 'no such'",
              "%%remote --cpus 0\nx = 1", "%%remote --timeout -1\nx = 1", "%%remote --memory 1\nx = 1",
              "%%remote --gpu H100:99\nx = 1", "%%remote --volume '../x:/d'\nx = 1"]


def test_hostile_magic_options_are_refused_and_later_cells_still_run(cellhop_kernel, tally):  # noqa: F811
    nb = cellhop_kernel
    nb.ok("%gpu none --cpus 1 --timeout 60")
    before = nb.ok("%gpu").stdout
    for line in BAD_MAGICS:
        ran = nb.run(line, timeout=120)
        clear = ran.status == "error" and bool(ran.ename) and len(ran.evalue) > 10
        tally.add("magics", "refused" if clear else "accepted" if ran.status == "ok" else "unclear")
        assert clear, (line, ran)
        assert nb.ok("%gpu").stdout == before, line  # nothing it set is kept
    ran = nb.ok("%%remote\nanswer = 6 * 7", timeout=120)  # and a cell after all of them still runs
    assert nb.ok("print(answer)").stdout.strip() == "42", ran

"""Images used from a real notebook kernel: `%%remote --image`, `%gpu --image`, `cellhop.remote(image=)`,
the ImageBuild widget, the version check before shipping, apt_install'd programs inside a container."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from image_index import make_index
from kernel_fixtures import start_cellhop_kernel

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def env():
    root = Path(tempfile.mkdtemp(prefix="ch-ik-", dir="/tmp"))
    index = make_index(root / "index")
    alpha10 = index.unpacked("chtest-alpha", "1.0", root / "nb-site")  # what the notebook itself has
    state = root / "state"
    with start_cellhop_kernel(extra_arguments=(f"--Cellhop.state_dir={state}",)) as kernel:
        kernel.ok(f"import cellhop, sys, json, warnings\nsys.path.insert(0, {str(alpha10)!r})\n"
                  f"INDEX = {index.url!r}")
        yield kernel, index, state, root
    shutil.rmtree(root, ignore_errors=True)


def _widget_shown(ran) -> bool:
    return any(WIDGET_VIEW in c.get("data", {}) for c in ran.displays())


def test_remote_cell_in_an_image_builds_with_a_widget_then_hits_the_cache(env):
    kernel, index, state, _ = env
    kernel.ok('img = cellhop.Image.current().pip_install("chtest-beta", index_url=INDEX)'
              '.env({"CHTEST_MODE": "fast"})')
    ran = kernel.ok("%%remote --image img\nimport chtest_beta, os, sys\n"
                    "got = (chtest_beta.alpha_version(), os.environ['CHTEST_MODE'], sys.prefix)", timeout=120)
    assert _widget_shown(ran), ran
    got = kernel.ok("print(json.dumps(got))").stdout
    alpha, mode, prefix = json.loads(got)
    assert (alpha, mode) == ("1.1", "fast") and prefix.startswith(str(state / "images" / "layers"))
    summary = json.loads(kernel.ok("from cellhop.widgets.image_build import ImageBuild\n"
                                   "print(json.dumps(ImageBuild.last.summary()))").stdout)
    assert summary["name"] == "img" and summary["state"] == "done" and summary["bar_style"] == "success"
    assert [s["state"] for s in summary["steps"]] in (["done"] * 3, ["cached", "done", "done"])
    assert summary["progress"] == [3, 3]
    assert any("chtest-alpha==1.1" in line for line in summary["log_tail"]), "\n".join(summary["log_tail"])
    assert not summary["log_open"] and summary["elapsed"] > 0

    again = kernel.ok("%%remote --image img\nsame = chtest_beta.VERSION")  # cached: no widget, warm container
    assert not _widget_shown(again) and again.container == ran.container
    plain = kernel.ok("%%remote\nimport sys\nplain_prefix = sys.prefix")  # the default: the notebook's own
    assert plain.container != ran.container
    assert kernel.ok("print(plain_prefix == sys.prefix)").stdout.strip() == "True"


def test_version_mismatch_is_an_error_naming_both_versions_and_minor_skew_a_warning(env):
    kernel, *_ = env
    kernel.ok("import chtest_alpha\nthing = chtest_alpha.Thing(21)\n"
              'v2 = cellhop.Image.current().pip_install("chtest-alpha==2.0", index_url=INDEX)\n'
              'v11 = cellhop.Image.current().pip_install("chtest-alpha==1.1", index_url=INDEX)')
    ran = kernel.run("%%remote --image v2\nresult = thing.doubled()", timeout=120)
    assert ran.status == "error" and ran.ename == "ImageMismatch", ran
    assert "chtest-alpha is 1.0 in the notebook but 2.0 in the image" in ran.evalue
    assert "nothing ran" in ran.evalue
    ok = kernel.ok("%%remote --image v11\nresult = thing.doubled()\nwhere = chtest_alpha.VERSION", timeout=120)
    assert "chtest-alpha 1.0 in the notebook, 1.1 in the image" in ok.stderr
    assert kernel.ok("print(result, where)").stdout.strip() == "42 1.1"


def test_gpu_image_default_and_remote_function_image(env):
    kernel, *_ = env
    kernel.ok('fast = cellhop.Image.current().env({"CHTEST_FLAVOR": "gpu-default"})')
    kernel.ok("%gpu H100 --image fast")
    kernel.ok("%%remote\nimport os\nflavor = os.environ.get('CHTEST_FLAVOR')")
    assert kernel.ok("print(flavor)").stdout.strip() == "gpu-default"
    kernel.ok("%gpu none --image default")
    kernel.ok("%%remote\nimport os\nflavor = os.environ.get('CHTEST_FLAVOR')")
    assert kernel.ok("print(flavor)").stdout.strip() == "None"
    out = kernel.ok(
        'fimg = cellhop.Image.current().pip_install("chtest-alpha==1.1", index_url=INDEX)\n'
        "@cellhop.remote(image=fimg)\n"
        "def which(x):\n    import chtest_alpha\n    return chtest_alpha.VERSION, x * 2\n"
        "print(which.remote(4), which.map([1, 2], progress=False))\nwhich.shutdown()", timeout=120).stdout
    assert out.strip() == "('1.1', 8) [('1.1', 2), ('1.1', 4)]"
    bad = kernel.run('f2 = cellhop.remote(image=v2)(lambda t: t.value)\nf2.remote(thing)', timeout=120)
    assert bad.status == "error" and bad.ename == "ImageMismatch" and "2.0 in the image" in bad.evalue


def test_local_dir_local_source_and_a_failing_build_in_the_notebook(env):
    kernel, index, state, root = env
    data = root / "data"
    data.mkdir()
    (data / "hello.txt").write_text("from the notebook host")
    mod = root / "mods"
    mod.mkdir()
    (mod / "chtest_local.py").write_text("ANSWER = 41 + 1\n")
    kernel.ok(f"sys.path.insert(0, {str(mod)!r})\n"
              f"local = cellhop.Image.current().add_local_dir({str(data)!r}, 'data')"
              ".add_local_python_source('chtest_local')")
    kernel.ok("%%remote --image local\nimport chtest_local\n"
              "text = open('data/hello.txt').read()\nanswer = chtest_local.ANSWER", timeout=120)
    assert kernel.ok("print(text, answer)").stdout.strip() == "from the notebook host 42"
    kernel.ok('broken = cellhop.Image.current().run_commands("echo nope >&2; exit 7")')
    ran = kernel.run("%%remote --image broken\nx = 1", timeout=120)
    assert ran.status == "error" and ran.ename == "ImageBuildError" and "exit code 7" in ran.evalue, ran
    summary = json.loads(kernel.ok("print(json.dumps(ImageBuild.last.summary()))").stdout)
    assert summary["state"] == "failed" and summary["steps"][-1]["state"] == "failed"
    assert summary["log_open"] and "nope" in summary["log_tail"]
    missing = kernel.run("%%remote --image nosuchvar\nx = 1")
    assert missing.status == "error" and "no variable 'nosuchvar'" in missing.evalue


def _apt_reachable() -> str | None:
    if not shutil.which("apt-get"):
        return "apt-get is not installed on this host"
    probe = tempfile.mkdtemp(prefix="ch-apt-", dir="/tmp")
    try:
        out = subprocess.run(["apt-get", "download", "-q", "jq"], cwd=probe, capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        return "the Debian mirror did not answer within 60 s"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    if out.returncode != 0:
        return f"apt-get download jq failed (is the Debian mirror reachable? apt-get update?): {out.stderr[-300:]}"
    return None


def test_apt_install_jq_runs_inside_the_container(env):
    reason = _apt_reachable()
    if reason:
        pytest.skip(reason)
    kernel, _, state, _ = env
    kernel.ok('tools = cellhop.Image.current().apt_install("jq")')
    kernel.ok("%%remote --image tools\nimport shutil, subprocess\njq = shutil.which('jq')\n"
              "out = subprocess.run([jq, '-c', '{sum: (.a + .b)}'], input='{\"a\": 40, \"b\": 2}', "
              "capture_output=True, text=True, check=True).stdout.strip()", timeout=180)
    jq_path, out = json.loads(kernel.ok("print(json.dumps([jq, out]))").stdout)
    assert jq_path.startswith(str(state / "images" / "layers")) and jq_path.endswith("/apt/usr/bin/jq")
    assert out == '{"sum":42}'


def test_a_clean_python_image_has_only_what_it_asks_for_plus_the_kernel(env):
    kernel, *_ = env
    kernel.ok('clean = cellhop.Image.python("%d.%d" % sys.version_info[:2])'
              '.pip_install("chtest-alpha==1.0", index_url=INDEX)')
    kernel.ok("%%remote --image clean\nimport importlib.util, chtest_alpha, cloudpickle\n"
              "seen = [chtest_alpha.VERSION, importlib.util.find_spec('numpy') is None, cloudpickle.__version__]",
              timeout=240)
    version, no_numpy, pickler = json.loads(kernel.ok("print(json.dumps(seen))").stdout)
    assert version == "1.0" and no_numpy  # numpy is in the notebook's environment, not in this image
    assert pickler == kernel.ok("import cloudpickle; print(cloudpickle.__version__)").stdout.strip()

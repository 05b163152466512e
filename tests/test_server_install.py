"""Installing the wheel enables the server extension: `jupyter server extension list` shows it
enabled and valid, from the jupyter_server_config.d file the wheel carries."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


def test_the_wheel_enables_the_extension_on_install(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path / "dist"), str(REPO)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("cellhop-*.whl")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "-q", str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    config = env_dir / "etc" / "jupyter" / "jupyter_server_config.d" / "cellhop.json"
    assert config.is_file()
    assert (env_dir / "share" / "cellhop" / "examples" / "demo.ipynb").is_file()
    listed = subprocess.run([str(python), "-m", "jupyter_server", "extension", "list"],
                            capture_output=True, text=True, cwd=tmp_path)
    text = listed.stdout + listed.stderr
    section = text[text.index(str(env_dir / "etc" / "jupyter")):]
    assert "cellhop \x1b[32menabled" in section or "cellhop enabled" in section, text
    assert "cellhop 0.1.0 \x1b[32mOK" in section or "cellhop 0.1.0 OK" in section, text

"""The JupyterLab panel's package: its unit tests (vitest) pass, and JupyterLab finds it built and enabled.

The unit tests need the extension's node packages (`npm ci` in labextension/, as .ci/run does);
without them they skip and say so. The built panel CI always has: without it the listing test fails
and says how to build it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parent.parent / "labextension"
NAME = json.loads((LAB / "package.json").read_text())["name"]


def _need_node_modules():
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed; .ci/run installs Node.js and builds the panel")
    if not (LAB / "node_modules").is_dir():
        pytest.skip("labextension/node_modules is missing: run `npm ci` in labextension/ (.ci/run does)")


def test_panel_unit_tests_pass():
    _need_node_modules()
    run = subprocess.run(["npm", "test", "--silent"], cwd=LAB, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CI": "true", "NO_COLOR": "1"})
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    passed = re.search(r"Tests\s+(\d+) passed", out)
    assert passed and int(passed.group(1)) >= 15, out[-2000:]


def test_jupyterlab_lists_the_panel_enabled_and_ok():
    if not (LAB / "dist" / "package.json").is_file():  # CI always builds it (.ci/run): a setup problem
        pytest.fail("the panel is not built (labextension/dist/package.json is missing): run `npm install && "
                    "npm run build` in labextension/ (.ci/run does; pip install does where Node.js >= 20.19 is "
                    "present)", pytrace=False)
    run = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True,
                         text=True, timeout=120)
    out = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)
    line = next((ln for ln in out.splitlines() if NAME in ln), None)
    assert line is not None, f"{NAME} is not installed where JupyterLab looks:\n{out}"
    assert "enabled" in line and "OK" in line and "(python, cellhop)" in line, line
    built = json.loads((LAB / "dist" / "package.json").read_text())["jupyterlab"]["_build"]["load"]
    assert (LAB / "dist" / built).is_file()

"""Choosing and configuring a container runtime.

`c.Cellhop.runtime` names an entry point of the group `cellhop.runtimes` (cellhop registers `local`
and `ray`); each runtime has its own settings, `c.LocalRuntime.*`, `c.RayRuntime.*`, and the
`c.Cellhop.*` names they had before still work, with a warning. A third runtime is a subclass and an
entry point, nothing else: here one is installed into a folder on sys.path and started by name.
"""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest
from traitlets.config import Config

from cellhop.container import ContainerSpec
from cellhop.errors import CellhopError
from cellhop.server_ext.runtimes.factory import runtime_class, runtime_names
from cellhop.server_ext.runtimes.local import LocalRuntime


def test_cellhop_registers_its_runtimes_by_name():
    assert {"local", "ray"} <= set(runtime_names())
    assert runtime_class("local") is LocalRuntime and runtime_class(" Local ") is LocalRuntime
    assert runtime_class("ray").__name__ == "RayRuntime"  # its class imports without Ray running
    with pytest.raises(CellhopError, match=r"'kubernetes' is not an installed cellhop runtime; installed: .*local"):
        runtime_class("kubernetes")


def test_a_runtime_setting_of_its_own_applies_to_its_containers(make_manager):
    config = Config()
    config.LocalRuntime.transport = "tcp"
    manager = make_manager(config=config)
    assert isinstance(manager.runtime, LocalRuntime) and manager.runtime.transport == "tcp"
    container = manager.start(ContainerSpec(gpu="none", owner="test"))
    assert container.connection_info["transport"] == "tcp" and container.connection_info["ip"] == "127.0.0.1"
    manager.stop(container.id)


def test_the_old_cellhop_settings_still_apply_with_a_warning(make_manager, caplog):
    caplog.set_level(logging.WARNING, logger="cellhop")
    assert make_manager(transport="tcp").runtime.transport == "tcp"
    assert "c.Cellhop.transport is deprecated; set c.LocalRuntime.transport instead" in caplog.text
    caplog.clear()
    config = Config()
    config.LocalRuntime.transport = "ipc"
    assert make_manager(config=config, transport="tcp").runtime.transport == "ipc"  # the new name wins
    assert "c.Cellhop.transport is ignored: c.LocalRuntime.transport is set too" in caplog.text
    assert make_manager().runtime.transport == "ipc"  # the default, no warning
    assert "deprecated" not in caplog.text


def test_a_third_runtime_is_a_subclass_and_an_entry_point(make_manager, tmp_path, monkeypatch):
    (tmp_path / "echo_runtime.py").write_text(textwrap.dedent('''
        from cellhop.server_ext.runtimes.local import LocalRuntime

        class EchoRuntime(LocalRuntime):
            """Containers as local ones, under another name."""

            name = "echo"

            def describe(self):
                return "echo: " + super().describe()
    '''))
    dist = tmp_path / "echo_runtime-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-runtime\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cellhop.runtimes]\necho = echo_runtime:EchoRuntime\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "echo" in runtime_names()
    config = Config()
    config.EchoRuntime.transport = "tcp"  # its traits are its own, LocalRuntime's included
    manager = make_manager(runtime="echo", config=config)
    assert type(manager.runtime).__name__ == "EchoRuntime" and manager.runtime.describe().startswith("echo: local")
    container = manager.start(ContainerSpec(gpu="H100", owner="test"))
    assert container.connection_info["transport"] == "tcp" and container.gpus[0].type == "H100"
    manager.stop(container.id)
    monkeypatch.delitem(sys.modules, "echo_runtime", raising=False)

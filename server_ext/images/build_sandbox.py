"""Image build steps run sandboxed like containers: `run_commands`, uv's installs and what reads a venv.

A build step is code the server did not write: a `run_commands` line, a
package's build backend, a `.pth` file an earlier step planted in the venv
(which every later start of that venv's Python runs). So each of them runs in
the sandbox containers get (sandbox.py): the same user without privileges,
the same hidden folders (the state directory with secrets and volumes, the
runtime folders, home folders), with only the layer being built writable.
Earlier layers are shown read-only; uv's cache (`<images>/uv-cache`) is
writable to uv's steps only. `run_commands` gets an isolated network
(outbound through slirp4netns where installed, like a container); uv's
installs share the host's network, so an index on this host's loopback (a
devpi, a mirror) keeps working. Where bubblewrap is missing, steps run
unsandboxed as before, and the builder says so once.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from ..container_env import allowed_environment
from ..container_network import find_slirp4netns
from ..container_user import ContainerUser
from ..sandbox import Sandbox, find_bubblewrap

log = logging.getLogger("cellhop")
UV_CACHE = "uv-cache"


def _hidden(store_root: Path) -> list[Path]:
    from jupyter_core.paths import jupyter_data_dir, jupyter_runtime_dir

    return [Path(store_root).parent, Path(jupyter_runtime_dir()), Path(jupyter_data_dir()) / "cellhop"]


class BuildSandbox:
    """Runs a build step's command in a sandbox whose only writable folder is the layer being built."""

    def __init__(self, store, uv: str | None = None):
        self.store = store
        bwrap = find_bubblewrap()
        self.sandbox = None
        if bwrap is None:
            log.warning("cellhop: bubblewrap (bwrap) is not installed, so image build steps (run_commands, "
                        "package installs) run unsandboxed as this server's user; install it with "
                        "'apt-get install bubblewrap'")
            return
        extra = [Path(uv).parent] if uv else []
        self.sandbox = Sandbox(bwrap, ContainerUser.for_this_server(), _hidden(store.root), slirp=find_slirp4netns(),
                               extra_import_paths=extra)

    def environment(self, env: dict[str, str], uv: bool, keep=()) -> dict[str, str]:
        """`env` (the step's) cut down to the allow-list, the names in `keep` (what the build set: the image's
        variables, its PATH, ...), and uv's own settings for uv."""
        base = allowed_environment(env)
        base.update({k: v for k, v in env.items() if k in keep})
        if uv:
            base.update({k: v for k, v in env.items() if k.startswith("UV_")})
            base["UV_CACHE_DIR"] = str(self.store.root / UV_CACHE)
        base["HOME"] = "/tmp"
        return base

    def popen(self, argv: list[str], tmp: Path, env: dict[str, str], network: str, uv: bool = False, keep=(),
              read_only=(), **kwargs) -> tuple[subprocess.Popen, object]:
        """Start `argv` sandboxed in the layer folder `tmp` (`network`: 'isolated' or 'host'; `read_only`: host
        paths the step reads); returns the process and its launch (pass it to finish() once it has ended)."""
        env = self.environment(env, uv, keep)
        mapped = [(self.store.layers, str(self.store.layers), True), (tmp, str(tmp), False)]
        mapped += [(Path(p), str(p), True) for p in read_only]
        if uv:
            cache = self.store.root / UV_CACHE
            cache.mkdir(mode=0o700, exist_ok=True)
            mapped.append((cache, str(cache), False))
        staging = self.store.root / ".staging" / tmp.name  # empty folders the step's mounts are made on
        python = Path(env["VIRTUAL_ENV"]) / "bin" / "python" if env.get("VIRTUAL_ENV") else None
        launch = self.sandbox.prepare([], tmp, mapped=mapped, isolated=network == "isolated",
                                      python=str(python) if python else None, staging=staging)
        try:
            proc = subprocess.Popen(launch.argv + list(argv), env=env, pass_fds=launch.pass_fds(),
                                    preexec_fn=launch.attach_in_child, start_new_session=True, **kwargs)
            launch.started()
        except BaseException:
            launch.close()
            _remove_staging(staging)
            raise
        launch.staging = staging
        return proc, launch


def _remove_staging(staging: Path) -> None:
    """The staging folders are empty on the host (their mounts live in the step's own mount namespace)."""
    if staging.is_dir():
        for entry in staging.iterdir():
            os.rmdir(entry)
        staging.rmdir()


def finish(launch) -> None:
    """After the step's process ended: stop its network helper, remove its staging folders."""
    launch.close()
    staging = getattr(launch, "staging", None)
    if staging is not None:
        _remove_staging(staging)

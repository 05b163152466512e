"""cellhop's configuration, as traitlets: `c.Cellhop.<name>` in any Jupyter or IPython config file.

Settings of one runtime are that runtime's own (`c.LocalRuntime.transport`, `c.RayRuntime.address`,
server_ext/runtimes/); the `c.Cellhop.<name>` they had before still work, with a warning.
"""

from __future__ import annotations

from traitlets import CaselessStrEnum, Float, Int, Unicode, validate
from traitlets.config import Configurable


class Cellhop(Configurable):
    """Settings of cellhop's control plane (shared by the server extension and the embedded one)."""

    runtime = Unicode(
        "local",
        help="Where containers run: 'local' (this host), 'ray' (a Ray cluster's nodes; c.RayRuntime.address), "
        "or another installed runtime (an entry point of the group 'cellhop.runtimes').",
    ).tag(config=True)

    @validate("runtime")
    def _runtime_name(self, proposal):
        return (proposal["value"] or "local").strip().lower()

    ray_address = Unicode(
        None, allow_none=True, help="Deprecated: use c.RayRuntime.address.",
    ).tag(config=True)

    ray_shared_volume_path = Unicode(
        None, allow_none=True, help="Deprecated: use c.RayRuntime.shared_volume_path.",
    ).tag(config=True)

    simulated_gpus = Unicode(
        "",
        help=(
            "A simulated GPU inventory for tests and demos, e.g. 'H100:2,A10G:1'. "
            "Empty: read the real GPUs through NVML (or CELLHOP_SIMULATED_GPUS if set). "
            "Everything that shows a simulated GPU says so."
        ),
    ).tag(config=True)

    sandbox = CaselessStrEnum(
        ["auto", "bubblewrap", "none"],
        default_value="auto",
        help="'auto': bubblewrap when installed, else unsandboxed (said once); "
        "'bubblewrap': required; 'none': never sandbox.",
    ).tag(config=True)

    idle_timeout = Float(
        300.0, help="Seconds a container may sit idle before it is stopped (scaledown window); 0 = never."
    ).tag(config=True)

    queue_timeout = Float(
        600.0, help="Seconds a request may wait for a GPU before it fails; 0 = wait forever."
    ).tag(config=True)

    start_timeout = Float(60.0, help="Seconds a container kernel may take to become ready.").tag(config=True)

    stop_grace = Float(
        5.0, help="Seconds between the polite stop (SIGTERM) and SIGKILL."
    ).tag(config=True)

    default_cpus = Int(0, help="CPUs a container may use; 0 = all of the host's.").tag(config=True)

    default_memory = Unicode("", help="Memory limit of a container, e.g. '8G'; empty = none.").tag(config=True)

    runtime_root = Unicode(
        "", help="Folder for runtime files (leases, queue, connection files); default jupyter_runtime_dir()/cellhop."
    ).tag(config=True)

    state_dir = Unicode(
        "", help="Folder for state that survives restarts; default jupyter_data_dir()/cellhop."
    ).tag(config=True)

    volume_quota = Unicode(
        "100G", help="Most a volume may hold through uploads, e.g. '500G'; empty = no limit. "
        "`cellhop volume create --quota` sets it per volume."
    ).tag(config=True)

    transport = CaselessStrEnum(
        ["tcp", "ipc"], default_value=None, allow_none=True, help="Deprecated: use c.LocalRuntime.transport.",
    ).tag(config=True)

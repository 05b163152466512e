"""cellhop's configuration, as traitlets: `c.Cellhop.<name>` in any Jupyter or IPython config file.

Settings of one runtime are that runtime's own (`c.LocalRuntime.transport`, `c.RayRuntime.address`,
server_ext/runtimes/); the `c.Cellhop.<name>` they had before still work, with a warning.
"""

from __future__ import annotations

import os

from traitlets import CaselessStrEnum, Dict, Float, Int, List, Unicode, default, validate
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

    standby = Int(
        None, allow_none=True,
        help="Started, sandboxed container kernels kept ready per image, holding no GPU, that a request claims "
        "(the claim takes the GPU lease, then makes that GPU visible to the claimed container only): the "
        "first cell of a notebook skips the kernel start. None (the default): 1 for the default image where "
        "the host has GPUs or a simulated inventory, else 0 (or the CELLHOP_STANDBY environment variable). "
        "Images a request used get as many too (c.Cellhop.standby_images of them, the most recently used). "
        "Only the local runtime keeps standbys; requests with volumes, secrets, variables, a working "
        "folder or another interpreter start a fresh container.",
    ).tag(config=True)

    @default("standby")
    def _standby_from_environment(self):
        value = os.environ.get("CELLHOP_STANDBY", "").strip()
        return int(value) if value.isdigit() else None

    standby_images = Int(
        2, help="Most built images (besides the default one) that keep standby containers: the most recently "
        "used; 0 = the default image only.",
    ).tag(config=True)

    preload = List(
        Unicode(), default_value=[],
        help="Modules a standby container of the default image imports before it is claimed (e.g. "
        "['numpy', 'torch']); images name their own with Image.preload(...). A module that fails to import "
        "is left out, with a line in the container's log.",
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

    workdir_roots = List(
        Unicode(), help="Host folders (and everything below them) a container spec's workdir may name; it is "
        "bound read-write into the container. Empty: the Jupyter server's root_dir (where notebooks live), or, "
        "for the control plane embedded in a kernel, the folder the kernel started in. cellhop's and Jupyter's "
        "own folders and system folders are never allowed (workdir_policy.py).",
    ).tag(config=True)

    keep_exited = Int(
        20, help="How many exited containers stay listed (with their logs) after they end; older ones are "
        "forgotten and their folders deleted. 0 = none are kept.",
    ).tag(config=True)

    exited_ttl = Float(
        3600.0, help="Seconds an exited container stays listed (with its log) after it ended; 0 = no time limit "
        "(keep_exited still applies).",
    ).tag(config=True)

    volume_quota = Unicode(
        "100G", help="Most a volume may hold through uploads, e.g. '500G'; empty = no limit. "
        "`cellhop volume create --quota` sets it per volume."
    ).tag(config=True)

    pull = CaselessStrEnum(
        ["all", "safe"], default_value="all",
        help="What a notebook takes back from containers (a %%remote cell's values, a cellhop.remote "
        "function's results): 'all', any object (unpickling it runs code the container chose, in the "
        "notebook kernel: right for your own cells), or 'safe', data types only (numpy arrays, pandas "
        "DataFrames and Series, builtins), rebuilt without running the container's code. Read by the "
        "notebook kernel (its IPython config, or --Cellhop.pull=safe); `%%remote --pull` and "
        "cellhop.remote(pull=) choose per cell or function, and the stricter setting wins. "
        "See docs/security.md.",
    ).tag(config=True)

    transport = CaselessStrEnum(
        ["tcp", "ipc"], default_value=None, allow_none=True, help="Deprecated: use c.LocalRuntime.transport.",
    ).tag(config=True)

    endpoint_queue_limit = Int(
        256, help="Requests that may wait for a container of one endpoint (cellhop.endpoint); beyond it, 429 "
        "with Retry-After.",
    ).tag(config=True)

    # -- runs (server_ext/runs.py): detached runs, the REST job queue, schedules, notebooks as jobs ------
    run_result_limit = Int(
        256 << 20, help="Largest result (pickled bytes) a run keeps on disk under the state directory; a larger "
        "one is not kept and the run says so (result_note). 0 = no limit.",
    ).tag(config=True)

    run_retention = Float(
        7 * 86400.0, help="Seconds a finished run (its record, result and logs) is kept after it ended; 0 = "
        "forever.",
    ).tag(config=True)

    run_concurrency = Int(
        8, help="Runs that may hold a container at once; the others wait, queued (GPU runs also queue for GPUs).",
    ).tag(config=True)

    run_keep_warm = Float(
        10.0, help="Seconds a function run's container stays warm after it succeeded, for the next run of the "
        "same owner and spec; 0 = stop it at once.",
    ).tag(config=True)

    host_dir = Unicode(
        "", help="The host-wide folder every user's server keeps GPU leases, the queue and the usage log in "
        "(made once by an admin: `cellhop host-setup`). Empty: /var/lib/cellhop where it is set up and this user "
        "may write there, else this user's runtime folder (GPUs are then exclusive among this user's processes "
        "only, and the control plane says so).",
    ).tag(config=True)

    max_gpus_per_user = Int(
        0, help="GPUs one user may hold at once (0 = no limit). The host folder's settings.json, the admin's, "
        "wins where it is stricter; past it a request waits, this user's idle containers yielding first.",
    ).tag(config=True)

    monthly_gpu_hours = Float(
        0.0, help="GPU-hours one user may use per calendar month (0 = no budget); past it new GPU requests are "
        "refused (running work goes on). The host folder's settings.json wins where it is stricter.",
    ).tag(config=True)

    gpu_prices = Dict(
        help="Price per GPU-hour by GPU type, e.g. {'H100': 2.5}, for `%gpu --usage`, the panel and the "
        "status line of %%remote cells (the host folder's settings.json may set them for everyone). None by default.",
    ).tag(config=True)

    @validate("gpu_prices")
    def _gpu_prices(self, proposal):  # a bad price is said at start, not when a view first adds it up
        from traitlets import TraitError

        from .host_dir import check_prices

        try:
            return check_prices(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"c.Cellhop.{exc}, e.g. c.Cellhop.gpu_prices = {{'H100': 2.5}}") from None

    usage_sample_interval = Float(
        10.0, help="Seconds between the GPU metric samples that measure how busy each lease's GPUs are.",
    ).tag(config=True)

    idle_holder_after = Float(
        3600.0, help="A container that held a GPU this long at under idle_holder_busy use is flagged, in the "
        "panel and to its owner, as an idle holder.",
    ).tag(config=True)

    idle_holder_busy = Float(0.05, help="The GPU use (0..1) under which a holder counts as idle.").tag(config=True)

    run_callback_timeout = Float(
        10.0, help="Seconds the POST to a run's callback_url may take (made once, redirects not followed).",
    ).tag(config=True)

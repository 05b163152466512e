"""`cellhop doctor`: what this host enforces for cellhop's containers and what it cannot, with what to
install or configure for each missing piece.

Each check reuses the probe the runtime itself uses (sandbox.find_bubblewrap, container_network.
find_slirp4netns, cgroups.place with resource_limits' fallbacks, nvml.read_nvml_inventory,
sandbox.gpu_device_files); what no probe answered before (does bubblewrap actually make a sandbox
here, with user and network namespaces) runs bubblewrap itself. Essential: a working bubblewrap (and
user namespaces where the server is not root); without them `cellhop doctor` exits 1. The rest
(slirp4netns, cgroup limits, GPUs, where GPU leases live: doctor_host.py, Ray) is reported with its
fallback. `--gpu`: doctor_gpu.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict

from ..inventory import SIMULATED_HINT
from .doctor_finding import Finding

NAMESPACE_FIX = ("bubblewrap needs the kernel to allow namespaces for this user: on Debian "
                 "`sysctl kernel.unprivileged_userns_clone=1`, on Ubuntu 24.04 "
                 "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`, and `user.max_user_namespaces` above 0; "
                 "in a Docker container run it with `--security-opt seccomp=unconfined --security-opt "
                 "apparmor=unconfined` (or as a VM)")


def _run(argv: list[str], timeout: float = 30) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, (done.stderr or done.stdout).strip()


def _bwrap_runs(bwrap: str, *options: str) -> tuple[bool, str]:
    """Whether bubblewrap makes a sandbox with these options here (and runs `true` in it), and why not."""
    rc, out = _run([bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--die-with-parent",
                    *options, "true"])
    return rc == 0, out.splitlines()[-1] if out else f"exit status {rc}"


def bubblewrap_problem() -> str | None:
    """None where bubblewrap is installed and makes a sandbox with the namespaces containers get (pid,
    ipc, uts; a user namespace too where this process is not root), else why not: for tests' guards
    and the doctor alike."""
    from .sandbox import find_bubblewrap

    bwrap = find_bubblewrap()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    options = ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if os.geteuid() != 0:
        options.append("--unshare-user")
    works, why = _bwrap_runs(bwrap, *options)
    return None if works else f"bubblewrap ({bwrap}) is installed but cannot make a sandbox here: {why}"


def check_bubblewrap() -> Finding:
    from .sandbox import find_bubblewrap

    bwrap = find_bubblewrap()
    if bwrap is None:
        return Finding("bubblewrap", False, "not installed: containers would run unsandboxed (c.Cellhop.sandbox "
                       "= 'auto') or not at all ('bubblewrap')", "apt-get install bubblewrap", essential=True)
    problem = bubblewrap_problem()
    _, version = _run([bwrap, "--version"])
    if problem:
        return Finding("bubblewrap", False, problem, NAMESPACE_FIX, essential=True)
    return Finding("bubblewrap", True, f"{version or 'bwrap'} at {bwrap} makes sandboxes (pid, ipc, uts, "
                   "mount namespaces)", essential=True)


def check_user_namespaces() -> Finding:
    from .sandbox import find_bubblewrap

    root = os.geteuid() == 0
    bwrap = find_bubblewrap()
    needed = "needed: this server is not root, so bubblewrap works in a user namespace"
    if root:
        needed = "not needed while the server runs as root (containers drop to an unprivileged uid with setpriv)"
    if bwrap is None:
        return Finding("user namespaces", root, f"not checked (no bubblewrap); {needed}", "apt-get install bubblewrap",
                       essential=not root)
    works, why = _bwrap_runs(bwrap, "--unshare-user")
    if works:
        return Finding("user namespaces", True, f"available; {needed}", essential=not root)
    return Finding("user namespaces", root, f"not available ({why}); {needed}", NAMESPACE_FIX, essential=not root)


def check_network() -> list[Finding]:
    from .container_network import find_slirp4netns
    from .sandbox import find_bubblewrap

    bwrap = find_bubblewrap()
    findings = []
    if bwrap is not None:
        works, why = _bwrap_runs(bwrap, "--unshare-net")
        findings.append(Finding(
            "network namespaces", works,
            "containers get a network of their own (c.LocalRuntime.network = 'isolated')" if works
            else f"not available ({why}): containers cannot be kept off the host's loopback",
            "" if works else NAMESPACE_FIX + "; or share the host's network: c.LocalRuntime.network = 'host'"))
    slirp = find_slirp4netns()
    findings.append(Finding(
        "slirp4netns", slirp is not None,
        f"{slirp}: isolated containers reach the outside (outbound only)" if slirp
        else "not installed: isolated containers have loopback only (no pip install, no downloads)",
        "" if slirp else "apt-get install slirp4netns (or c.LocalRuntime.network = 'host')"))
    return findings


def check_limits() -> list[Finding]:
    from . import cgroups
    from .resource_limits import enforcement

    placement = cgroups.place()
    as_root = False  # containers run as an unprivileged uid under bubblewrap
    findings = []
    for controller in ("memory", "pids", "cpu"):
        found = placement.enforcement(controller)
        if found:
            version, parent = placement.parents[controller]
            findings.append(Finding(f"{controller} limit", True, f"{found} (groups under {parent})"))
            continue
        fallback = enforcement(placement, controller, as_root)
        findings.append(Finding(
            f"{controller} limit", False,
            f"no cgroup ({placement.reasons.get(controller, 'none found')}); falls back to {fallback}",
            "on cgroup v2, delegate a group with the memory, pids and cpu controllers to the server "
            "(e.g. `systemd-run --scope -p Delegate=yes jupyter lab`) or name one in c.LocalRuntime.cgroup_parent; "
            "on cgroup v1, make the controller's hierarchy writable by the server"))
    return findings


def check_gpus() -> list[Finding]:
    from .nvml import read_nvml_inventory
    from .sandbox import NVIDIA_CONTROL_DEVICES, gpu_device_files

    inv = read_nvml_inventory()
    if not inv.gpus:
        return [Finding("GPUs (NVML)", False, f"none: {inv.reason}",
                        "install the NVIDIA driver where the host has GPUs; " + SIMULATED_HINT[0].lower() + SIMULATED_HINT[1:])]
    findings = [Finding("GPUs (NVML)", True, f"{len(inv.gpus)} GPU(s), driver {inv.driver_version or '?'}")]
    control = [p for p in NVIDIA_CONTROL_DEVICES if os.path.exists(p)]
    for g in inv.gpus:
        files = [p for p in gpu_device_files([g.minor]) if p not in NVIDIA_CONTROL_DEVICES]
        missing = [p for p in files if not os.path.exists(p)]
        what = f"{g.type} ({g.name}, {g.memory_total / 2**30:.0f} GiB, {g.uuid})"
        if g.minor is None:
            findings.append(Finding(f"GPU {g.index}", False, f"{what}: NVML gives no minor number, so its device "
                                    "file is unknown and a container cannot be given it",
                                    "update the NVIDIA driver"))
        elif missing or "/dev/nvidiactl" not in control:
            gone = missing + ([] if "/dev/nvidiactl" in control else ["/dev/nvidiactl"])
            findings.append(Finding(f"GPU {g.index}", False, f"{what}: device file(s) {', '.join(gone)} missing",
                                    "load the NVIDIA kernel modules (nvidia-modprobe, or `nvidia-smi` once as "
                                    "root); in a container, pass the devices in (--gpus all)"))
        else:
            findings.append(Finding(f"GPU {g.index}", True, f"{what}: {', '.join(files)} present; "
                                    f"control devices {', '.join(control)}"))
    return findings


def check_ray() -> Finding:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("ray")
    except PackageNotFoundError:
        return Finding("Ray", False, "not installed: the ray runtime (c.Cellhop.runtime = 'ray') is unavailable; "
                       "the local runtime needs nothing of it", "pip install 'cellhop[ray]' to run past one machine")
    return Finding("Ray", True, f"ray {found}: c.Cellhop.runtime = 'ray' can be used")


def host_findings() -> list[Finding]:
    from .doctor_host import check_host_dir

    return [check_bubblewrap(), check_user_namespaces(), *check_network(), *check_limits(), *check_gpus(),
            *check_host_dir(), check_ray()]


def report(findings: list[Finding]) -> tuple[str, int]:
    """The text the doctor prints, and its exit status (1 where an essential check failed)."""
    lines = []
    for f in findings:
        mark = "ok  " if f.ok else ("FAIL" if f.essential else "--  ")
        lines.append(f"[{mark}] {f.name}: {f.detail}")
        if not f.ok and f.fix:
            lines.append(f"        to fix: {f.fix}")
    failed = [f.name for f in findings if f.essential and not f.ok]
    if failed:
        lines.append(f"cellhop cannot sandbox containers on this host: {', '.join(failed)} (see above).")
    else:
        lines.append("The essentials are there: cellhop can run sandboxed containers on this host"
                     + ("; the lines marked -- say what it cannot enforce or offer, and the fallback."
                        if any(not f.ok for f in findings) else "."))
    return "\n".join(lines), 1 if failed else 0


def _cmd_doctor(args) -> int:
    findings = host_findings()
    text, status = report(findings)
    if args.json:
        print(json.dumps({"findings": [asdict(f) for f in findings], "essentials_ok": status == 0}, indent=2))
    else:
        print(text)
    if args.gpu:
        from .doctor_gpu import run_gpu_checks

        gpu_status = run_gpu_checks()
        status = status or gpu_status
    return status


def add_commands(sub) -> None:
    p = sub.add_parser("doctor", help="say what this host enforces for cellhop's containers, and what is missing")
    p.add_argument("--gpu", action="store_true",
                   help="also run a GPU cell: CUDA memory seen by the metric stream, one pinned device, a matmul")
    p.add_argument("--json", action="store_true", help="the host checks as JSON")
    p.set_defaults(func=_cmd_doctor)

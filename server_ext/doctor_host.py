"""`cellhop doctor`'s look at the host folder (host_dir.py): where this user's GPU leases live, host-wide
or this user's own (and then exactly why the system folder was not used, with the one command that fixes
it), and the admin's settings in force. Keeping one's leases to oneself is a warning, never a failure:
it is right on a machine only one user runs cellhop on.
"""

from __future__ import annotations

import grp
import os
from pathlib import Path

from .doctor_finding import Finding
from .host_dir import SETTINGS, SHARED_FOLDERS, SYSTEM_HOST_DIR, HostSettings, read_settings, stricter, unusable
from .leases import user_name


def setup_command(root: Path) -> str:
    return "sudo cellhop host-setup" + ("" if str(root) == SYSTEM_HOST_DIR else f" --dir {root}")


def fix_command(root: Path, problem: str) -> str:
    """The one thing to run (or do) so that `root` can hold this user's leases, given `unusable`'s answer."""
    setup = setup_command(root)
    if problem.startswith("this user may not write"):
        try:
            group = grp.getgrgid(os.lstat(root / SHARED_FOLDERS[0]).st_gid)
        except (OSError, KeyError):
            return f"{setup} --add-user {user_name()}, then log in again"
        if group.gr_gid not in os.getgroups() and user_name() in group.gr_mem:
            return (f"log in again (a new login session): you were added to the group {group.gr_name} after this "
                    "one began; then restart your Jupyter servers")
        return f"{setup} --add-user {user_name()}, then log in again (to be in the group {group.gr_name})"
    if problem.startswith("it is not a folder"):
        return f"sudo mv {root} {root}.old && {setup}"
    if problem.startswith("it belongs to uid"):
        return f"sudo chown root:root {root} && {setup}"
    return setup


def describe_settings(settings: HostSettings, own: dict | None = None, user: str | None = None) -> str:
    """The limits in force for `user`: the admin's, or this user's own (`own`: c.Cellhop's) where stricter."""
    user = user or user_name()
    own = own or {}
    parts = []
    cap = stricter(settings.for_user(user, "max_gpus_per_user"), own.get("max_gpus_per_user"))
    parts.append(f"at most {cap} GPU(s) at once per user" if cap else "no cap on GPUs per user")
    hours = stricter(settings.for_user(user, "monthly_gpu_hours"), own.get("monthly_gpu_hours"))
    parts.append(f"{hours:g} GPU-hours a month" if hours else "no monthly budget")
    prices = settings.gpu_prices
    parts.append("prices per GPU-hour " + ", ".join(f"{t} {p:g}" for t, p in sorted(prices.items())) if prices
                 else "no prices")
    if user in settings.users:
        parts.append(f"an exception for {user}")
    return "; ".join(parts)


def _configured() -> tuple[str, dict, Path]:
    """c.Cellhop.host_dir, this user's own limits and the per-user runtime folder, as the server reads them."""
    from jupyter_core.paths import jupyter_runtime_dir

    from .cli_storage import server_config
    from .config import Cellhop

    config = Cellhop(config=server_config())
    own = {"max_gpus_per_user": config.max_gpus_per_user or None,
           "monthly_gpu_hours": config.monthly_gpu_hours or None}
    root = Path(config.runtime_root) if config.runtime_root else Path(jupyter_runtime_dir()) / "cellhop"
    return config.host_dir, own, root


def check_host_dir(configured: str | None = None, system: str = SYSTEM_HOST_DIR, own: dict | None = None,
                   per_user_root: Path | None = None) -> list[Finding]:
    """Where GPU leases live for this user's servers, and the admin's settings in force there."""
    if configured is None:
        try:
            configured, own, per_user_root = _configured()
        except Exception as exc:  # a broken config file: the server would say so too
            return [Finding("GPU leases", False, f"the Jupyter config files could not be read: {exc}",
                            "fix the config file the error names")]
    if configured:
        problem = unusable(Path(configured))
        if problem:
            return [Finding("GPU leases", False, f"c.Cellhop.host_dir = {configured!r} cannot hold them: {problem}; "
                            "the control plane does not start with it",
                            f"{fix_command(Path(configured), problem)}; or leave c.Cellhop.host_dir unset")]
        return _host_wide(Path(configured), "c.Cellhop.host_dir", own)
    problem = unusable(Path(system))
    if problem is None:
        return _host_wide(Path(system), "the system folder", own)
    where = per_user_root or Path("<jupyter runtime dir>/cellhop")
    return [Finding("GPU leases", False, f"this user's own ({where}): GPUs are exclusive among this user's "
                    f"processes only, other users' servers do not see these leases (fine where one user runs "
                    f"cellhop on this host); {system} was not used: {problem}",
                    fix_command(Path(system), problem))]


def _host_wide(root: Path, how: str, own: dict | None) -> list[Finding]:
    settings = read_settings(root / SETTINGS)
    leases = Finding("GPU leases", True, f"host-wide at {root} ({how}): every user's server shares them, and "
                     "one fair queue")
    if settings.problem:
        return [leases, Finding("host settings", False, f"{settings.problem}; no admin limits are in force",
                                f"{setup_command(root)} (it makes the file root's, mode 0644, and says what is "
                                "wrong in it)")]
    return [leases, Finding("host settings", True, f"in force for {user_name()}: {describe_settings(settings, own)}")]

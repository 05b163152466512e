"""Where GPU leases, the queue and the usage log live: one folder for the whole host, shared by every user.

An admin makes it once (`cellhop host-setup`, run as root): a folder owned by
root, its subfolders sticky and writable by the group of cellhop's users, so
every user's server may add files and none may remove or change another's
(host_files.py). `c.Cellhop.host_dir` names it; by default it is
SYSTEM_HOST_DIR when that exists and this user may write there. Otherwise
each user's server keeps its leases in its own runtime folder, and GPUs are
exclusive among that user's processes only: the control plane says so.

`settings.json` there (root's, writable by nobody else) holds what the admin
decides for everyone: `max_gpus_per_user`, `monthly_gpu_hours`, `gpu_prices`,
and per-user exceptions under `users`. A user's own configuration may be
stricter, never looser.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HostDirError
from .paths import private_dir

SYSTEM_HOST_DIR = "/var/lib/cellhop"
SHARED_FOLDERS = ("leases", "queue", "grants", "usage")
SETTINGS = "settings.json"
SETTINGS_LIMIT = 256 * 1024


@dataclass
class HostSettings:
    """The admin's settings (all None/empty when there are none)."""

    max_gpus_per_user: int | None = None
    monthly_gpu_hours: float | None = None
    gpu_prices: dict[str, float] = field(default_factory=dict)
    users: dict[str, dict] = field(default_factory=dict)
    problem: str | None = None  # why a settings file present was not used

    def for_user(self, user: str, key: str):
        own = self.users.get(user, {})
        return own[key] if key in own else getattr(self, key)


@dataclass
class HostPlace:
    """The folder leases live in, and what that means."""

    root: Path
    shared: bool  # one folder for every user of the host
    note: str  # for the log line at start and `cellhop doctor`
    settings: HostSettings = field(default_factory=HostSettings)

    def folder(self, name: str) -> Path:
        return self.root / name


def locate(configured: str, per_user_root: Path) -> HostPlace:
    """The host folder `configured` (c.Cellhop.host_dir; HostDirError when it is not usable), else the
    system one when usable, else the per-user folder under `per_user_root`."""
    if configured:
        problem = unusable(Path(configured))
        if problem:
            raise HostDirError(f"c.Cellhop.host_dir = {configured!r} cannot hold the host's GPU leases: {problem}. "
                                "An admin sets it up once with `cellhop host-setup --dir "
                                f"{configured}` (as root); or leave c.Cellhop.host_dir unset.")
        return _shared(Path(configured))
    if not unusable(Path(SYSTEM_HOST_DIR)):
        return _shared(Path(SYSTEM_HOST_DIR))
    return own_place(per_user_root)


def own_place(root: Path) -> HostPlace:
    """This user's own folder for leases (made owner-only): GPUs exclusive among its processes alone."""
    for name in SHARED_FOLDERS:
        private_dir(root / name)
    return HostPlace(root, False,
                     f"GPU leases are this user's own ({root}): GPUs are exclusive among this user's "
                     f"processes only; other users' servers do not see these leases. An admin makes them host-wide "
                     f"with `cellhop host-setup` (as root; it creates {SYSTEM_HOST_DIR}).")


def _shared(root: Path) -> HostPlace:
    settings = read_settings(root / SETTINGS)
    return HostPlace(root, True, f"GPU leases are host-wide ({root}): every user's server shares them", settings)


def unusable(root: Path) -> str | None:
    """Why `root` cannot be the host folder for this user, or None when it can."""
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        return "it does not exist"
    except OSError as exc:
        return f"it cannot be looked at ({exc.strerror})"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return "it is not a folder (a symlink is not accepted)"
    if info.st_uid not in (0, os.getuid()):
        return f"it belongs to uid {info.st_uid}, not to root"
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        return "anyone may rename what is in it (world-writable without the sticky bit)"
    for name in SHARED_FOLDERS:
        sub = root / name
        try:
            sub_info = os.lstat(sub)
        except OSError:
            return f"it has no {name}/ folder"
        if not stat.S_ISDIR(sub_info.st_mode):
            return f"{name}/ is not a folder"
        if sub_info.st_uid not in (0, os.getuid()):
            return f"{name}/ belongs to uid {sub_info.st_uid}, not to root"
        shared = sub_info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if shared and not sub_info.st_mode & stat.S_ISVTX:
            return f"{name}/ lacks the sticky bit (users could remove each other's leases)"
        if not os.access(sub, os.W_OK | os.X_OK):
            return f"this user may not write in {name}/ (is it in the folder's group?)"
    return None


def read_settings(path: Path) -> HostSettings:
    """The admin's settings file, validated; a file anyone but root may change is not used (said why)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return HostSettings()
    except OSError as exc:
        return HostSettings(problem=f"{path} cannot be read ({exc.strerror})")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > SETTINGS_LIMIT:
            return HostSettings(problem=f"{path} is not a small regular file")
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return HostSettings(problem=f"{path} is not used: only root may own and change it")
        raw = os.read(fd, SETTINGS_LIMIT)
    finally:
        os.close(fd)
    try:
        return parse_settings(json.loads(raw))
    except (ValueError, TypeError) as exc:
        return HostSettings(problem=f"{path} is not used: {exc}")


def parse_settings(data) -> HostSettings:
    if not isinstance(data, dict):
        raise ValueError("it must hold a JSON object")
    unknown = set(data) - {"max_gpus_per_user", "monthly_gpu_hours", "gpu_prices", "users"}
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    users = data.get("users") or {}
    if not isinstance(users, dict) or not all(isinstance(v, dict) for v in users.values()):
        raise ValueError("'users' maps user names to their settings")
    for name, own in users.items():
        extra = set(own) - {"max_gpus_per_user", "monthly_gpu_hours"}
        if extra:
            raise ValueError(f"users.{name}: unknown settings {sorted(extra)}")
        _check_limits(own, f"users.{name}.")
    _check_limits(data, "")
    return HostSettings(max_gpus_per_user=data.get("max_gpus_per_user"),
                        monthly_gpu_hours=data.get("monthly_gpu_hours"),
                        gpu_prices=check_prices(data.get("gpu_prices") or {}), users=users)


def _check_limits(data: dict, where: str) -> None:
    cap = data.get("max_gpus_per_user")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
        raise ValueError(f"{where}max_gpus_per_user must be a whole number >= 0 (0: no limit)")
    hours = data.get("monthly_gpu_hours")
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, (int, float)) or hours < 0):
        raise ValueError(f"{where}monthly_gpu_hours must be a number >= 0 (0: no budget)")


def check_prices(prices) -> dict[str, float]:
    """{GPU type: price per GPU-hour}, validated."""
    if not isinstance(prices, dict):
        raise ValueError("gpu_prices maps GPU types to a price per GPU-hour")
    out = {}
    for gpu_type, price in prices.items():
        if not isinstance(gpu_type, str) or isinstance(price, bool) or not isinstance(price, (int, float)) \
                or price < 0 or price != price:
            raise ValueError(f"gpu_prices[{gpu_type!r}] must be a number >= 0 (a price per GPU-hour)")
        out[gpu_type] = float(price)
    return out


def stricter(host_value, own_value):
    """The tighter of the admin's limit and the user's own (None/0 = no limit)."""
    values = [v for v in (host_value, own_value) if v]
    return min(values) if values else None

"""`cellhop host-setup`: what an admin runs once (as root) so every user's server shares one host folder
for GPU leases, the queue and the usage log (host_dir.py).

It makes (or repairs) the folder, root:root mode 0755, and each of its shared subfolders root:<group>
mode 1770: members of the group add files there, and the sticky bit keeps anyone from removing or
renaming another's (host_files.py). It writes the admin's settings.json (root's, 0644) with the keys
given, merged into the one there. Running it again fixes permissions and never deletes anything. It
checks everything before it changes anything: a --dir that is a symlink, that belongs to someone other
than root, or that a user could swap (a folder above it writable by a user) or cannot reach is refused.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

from .host_dir import SETTINGS, SETTINGS_LIMIT, SHARED_FOLDERS, SYSTEM_HOST_DIR, parse_settings

DEFAULT_GROUP = "cellhop"
DIR_MODE = 0o755
SHARED_MODE = 0o1770  # sticky, group rwx: members add files, nobody removes another's
SETTINGS_MODE = 0o644


class SetupError(Exception):
    """What stops the set-up, said before anything was changed (or at the step that failed)."""


def _ancestors_problem(path: Path, gid: int | None) -> str | None:
    """Why a folder above `path` lets a user swap it, or keeps the group's users from reaching it."""
    for parent in reversed(path.parents):
        try:
            info = os.stat(parent)  # a symlinked /var is fine: root made it; what it points to is checked
        except FileNotFoundError:
            return None  # made below, by root, mode 0755
        mode = info.st_mode
        if info.st_uid != 0:
            return (f"{parent} belongs to uid {info.st_uid}, who could swap {path} for a folder of their own: "
                    "choose a --dir whose every parent folder is root's")
        writable_by_group = mode & stat.S_IWGRP and info.st_gid != 0
        if (mode & stat.S_IWOTH or writable_by_group) and not mode & stat.S_ISVTX:
            return (f"{parent} (mode {stat.S_IMODE(mode):04o}) lets other users rename what is in it, so they "
                    f"could swap {path}: choose another --dir, or `chmod go-w {parent}`")
        reachable = mode & stat.S_IXOTH or (gid is not None and info.st_gid == gid and mode & stat.S_IXGRP)
        if not reachable:
            return (f"users cannot reach {path}: {parent} is mode {stat.S_IMODE(mode):04o}; "
                    f"`chmod o+x {parent}` or choose another --dir")
    return None


def _dir_problem(path: Path) -> str | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symlink: give the real folder as --dir (a link could be repointed)"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} exists and is not a folder"
    if info.st_uid != 0:
        return (f"{path} belongs to uid {info.st_uid}, not root: that user could change what every server "
                f"trusts there; move it away (or `chown root:root {path}` if it is meant to be the host folder) "
                "and run this again")
    return None


def _parse_prices(items: list[str]) -> dict[str, float]:
    prices = {}
    for item in items:
        gpu_type, sep, price = item.partition("=")
        try:
            if not sep or not gpu_type.strip():
                raise ValueError
            prices[gpu_type.strip()] = float(price)
        except ValueError:
            raise SetupError(f"--price {item!r}: give TYPE=PRICE, a GPU type and its price per GPU-hour, "
                             "e.g. --price H100=2.5") from None
    return prices


def _read_existing(fd_dir: int, path: Path) -> dict:
    """The settings.json already there (as an object), {} when there is none."""
    try:
        fd = os.open(SETTINGS, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd_dir)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SetupError(f"{path} cannot be read ({exc.strerror}): remove it and run this again") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > SETTINGS_LIMIT:
            raise SetupError(f"{path} is not a small regular file: remove it and run this again")
        raw = os.read(fd, SETTINGS_LIMIT)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        parse_settings(data)
    except (ValueError, TypeError) as exc:
        raise SetupError(f"{path} holds invalid settings ({exc}): fix or remove it and run this again") from None
    return data


def wanted_settings(args) -> dict:
    """The settings keys this run was given (only those are written)."""
    given = {}
    if args.max_gpus_per_user is not None:
        given["max_gpus_per_user"] = args.max_gpus_per_user
    if args.monthly_gpu_hours is not None:
        hours = args.monthly_gpu_hours
        given["monthly_gpu_hours"] = int(hours) if float(hours).is_integer() else hours
    if args.price:
        given["gpu_prices"] = _parse_prices(args.price)
    return given


def _merge(existing: dict, given: dict) -> dict:
    merged = dict(existing)
    for key, value in given.items():
        merged[key] = {**(existing.get("gpu_prices") or {}), **value} if key == "gpu_prices" else value
    try:
        parse_settings(merged)
    except (ValueError, TypeError) as exc:
        raise SetupError(f"these settings are not valid: {exc}") from None
    return merged


def _fix(fd: int, uid: int, gid: int, mode: int) -> list[str]:
    """Give the open file `fd` this owner and mode; what changed."""
    info = os.fstat(fd)
    changed = []
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)
        changed.append(f"owner {_owner(info.st_uid, info.st_gid)} -> {_owner(uid, gid)}")
    if stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)  # after the chown, which clears the sticky bit on some systems
        changed.append(f"mode {stat.S_IMODE(info.st_mode):04o} -> {mode:04o}")
    return changed


def _say(done: list[str], what: str, made: bool, changed: list[str], uid: int, gid: int, mode: int) -> None:
    if made:
        done.append(f"made {what} ({_owner(uid, gid)}, mode {mode:04o})")
    elif changed:
        done.append(f"fixed {what}: {', '.join(changed)}")


def _owner(uid: int, gid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name}:{grp.getgrgid(gid).gr_name}"
    except KeyError:
        return f"{uid}:{gid}"


def _open_dir(name, dir_fd: int | None = None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _make_folders(root: Path, gid: int, done: list[str]) -> int:
    """The host folder and its shared subfolders, made or repaired; an open descriptor of the folder."""
    made = not root.exists()
    if made:
        os.makedirs(root.parent, mode=DIR_MODE, exist_ok=True)
        os.mkdir(root, DIR_MODE)
    fd = _open_dir(root)  # O_NOFOLLOW: a symlink swapped in since the checks is refused, not followed
    _say(done, str(root), made, _fix(fd, 0, 0, DIR_MODE), 0, 0, DIR_MODE)  # now only root renames in it
    for name in SHARED_FOLDERS:
        try:
            os.mkdir(name, SHARED_MODE, dir_fd=fd)
            made = True
        except FileExistsError:
            made = False
        try:
            sub = _open_dir(name, fd)
        except OSError:
            os.close(fd)
            raise SetupError(f"{root / name} is not a folder (a symlink or a file?): move it away and run this "
                             "again") from None
        try:
            _say(done, f"{root / name}/", made, _fix(sub, 0, gid, SHARED_MODE), 0, gid, SHARED_MODE)
        finally:
            os.close(sub)
    return fd


def _write_settings(fd_dir: int, root: Path, given: dict, done: list[str]) -> dict | str:
    """The settings now in force (merged with `given`, written when they changed), or what is wrong with the
    file there when nothing was given to write (with settings given, that stops the set-up)."""
    path = root / SETTINGS
    try:
        existing = _read_existing(fd_dir, path)
    except SetupError as exc:
        if given:
            raise
        return str(exc)
    if given:
        merged = _merge(existing, given)
        if merged != existing:
            temp = f".{SETTINGS}.new"
            try:
                os.unlink(temp, dir_fd=fd_dir)  # left by a run that was killed; only root writes here
            except FileNotFoundError:
                pass
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, SETTINGS_MODE,
                         dir_fd=fd_dir)
            try:
                os.fchmod(fd, SETTINGS_MODE)  # whatever the umask
                os.write(fd, (json.dumps(merged, indent=2, sort_keys=True) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, SETTINGS, src_dir_fd=fd_dir, dst_dir_fd=fd_dir)
            changed = ", ".join(f"{k} = {json.dumps(merged[k])}" for k in sorted(given))
            done.append(f"wrote {path}: {changed}")
            existing = merged
    try:
        fd = os.open(SETTINGS, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd_dir)
    except FileNotFoundError:
        return existing
    try:
        _say(done, str(path), False, _fix(fd, 0, 0, SETTINGS_MODE), 0, 0, SETTINGS_MODE)
    finally:
        os.close(fd)
    return existing


def _group(name: str | None, root: Path, done: list[str]) -> tuple[str, int]:
    """The group given, else the one the shared folders already have, else `cellhop`; made when missing."""
    if name is None:
        try:
            gid = os.lstat(root / SHARED_FOLDERS[0]).st_gid
            name = grp.getgrgid(gid).gr_name if gid != 0 else DEFAULT_GROUP
        except (OSError, KeyError):
            name = DEFAULT_GROUP
    try:
        return name, grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    made = subprocess.run(["groupadd", "--system", name], capture_output=True, text=True)
    if made.returncode != 0:
        raise SetupError(f"the group {name!r} does not exist and groupadd could not make it: "
                         f"{(made.stderr or made.stdout).strip()}")
    done.append(f"made the group {name}")
    return name, grp.getgrnam(name).gr_gid


def _add_users(names: list[str], group: str, gid: int, done: list[str]) -> list[str]:
    added = []
    for name in names:
        entry = pwd.getpwnam(name)
        if entry.pw_gid == gid or name in grp.getgrgid(gid).gr_mem:
            continue  # already in it
        ran = subprocess.run(["usermod", "-aG", group, name], capture_output=True, text=True)
        if ran.returncode != 0:
            raise SetupError(f"usermod could not add {name} to {group}: {(ran.stderr or ran.stdout).strip()}")
        done.append(f"added {name} to the group {group}")
        added.append(name)
    return added


def host_setup(args) -> list[str]:
    """Set the host folder up as `args` says; the lines saying what it did and what users do next."""
    if os.geteuid() != 0:
        raise SetupError("it must run as root (it makes a group and folders owned by root): "
                         "run it with sudo, e.g. `sudo cellhop host-setup`")
    root = Path(os.path.abspath(args.dir))
    given = wanted_settings(args)
    if given:
        _merge({}, given)  # each value valid before anything changes
    for name in args.add_user:
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise SetupError(f"--add-user {name}: there is no such user on this host") from None
    problem = _dir_problem(root)
    existing_gid = None
    if args.group is not None:
        try:
            existing_gid = grp.getgrnam(args.group).gr_gid
        except KeyError:
            pass
    problem = problem or _ancestors_problem(root, existing_gid)
    if problem:
        raise SetupError(problem)
    done: list[str] = []
    group, gid = _group(args.group, root, done)
    fd = _make_folders(root, gid, done)
    try:
        settings = _write_settings(fd, root, given, done)
    finally:
        os.close(fd)
    added = _add_users(args.add_user, group, gid, done)
    return done + _next_steps(root, group, gid, added, settings, bool(done))


def _next_steps(root: Path, group: str, gid: int, added: list[str], settings: dict | str,
                changed: bool) -> list[str]:
    members = sorted(set(grp.getgrgid(gid).gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid})
    lines = [] if changed else [f"{root} was already set up: nothing to change"]
    lines.append(f"{root} holds the GPU leases, the queue and the usage log of every member of the group {group} "
                 f"({', '.join(members) or 'none yet: add them with --add-user NAME'})")
    if isinstance(settings, str):
        lines.append(f"WARNING: {settings}; until then servers use no settings (no cap, no budget, no prices)")
    else:
        lines.append(f"settings for everyone ({root / SETTINGS}): "
                     + (json.dumps(settings, sort_keys=True) if settings else "none (no cap, no budget, no prices)"))
    if added:
        lines.append(f"{', '.join(added)}: log in again (a new login session) to be in the group {group}")
    lines.append("Each user: restart your Jupyter servers (and `cellhop serve`) so they share this folder; "
                 "`cellhop doctor` says where GPU leases live.")
    if str(root) != SYSTEM_HOST_DIR:
        lines.append(f"This is not the default folder: each user's Jupyter config needs "
                     f"c.Cellhop.host_dir = {str(root)!r}")
    return lines


def _cmd_host_setup(args) -> int:
    try:
        lines = host_setup(args)
    except SetupError as exc:
        print(f"cellhop host-setup: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("host-setup", help="as root, once: the host-wide folder every user's server shares GPU "
                       "leases, the queue and usage in, its group, and the settings for everyone")
    p.add_argument("--dir", default=SYSTEM_HOST_DIR, help=f"the host folder (default {SYSTEM_HOST_DIR}; "
                   "another one needs c.Cellhop.host_dir in every user's config)")
    p.add_argument("--group", default=None, help=f"the group of cellhop's users (default: the folder's, else "
                   f"{DEFAULT_GROUP!r}; made when missing)")
    p.add_argument("--add-user", action="append", default=[], metavar="NAME",
                   help="add this user to the group (repeat for more); they log in again to get it")
    p.add_argument("--max-gpus-per-user", type=int, default=None, metavar="N",
                   help="GPUs one user may hold at once (0: no limit)")
    p.add_argument("--monthly-gpu-hours", type=float, default=None, metavar="H",
                   help="GPU-hours one user may use per calendar month (0: no budget)")
    p.add_argument("--price", action="append", default=[], metavar="TYPE=PRICE",
                   help="price per GPU-hour of a GPU type, e.g. H100=2.5 (repeat for more)")
    p.set_defaults(func=_cmd_host_setup)

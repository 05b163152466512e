"""Control groups for local containers: memory, process and CPU limits a cell cannot lift.

Each controller lives in one hierarchy: the unified one (cgroup v2) where it
lists the controller, else the cgroup v1 mount that carries it (hosts with
both, as systemd's hybrid layout, have some here and some there). A
container's group is made under this process's own group of that hierarchy
(or under `c.LocalRuntime.cgroup_parent`, a v2 group delegated to cellhop), one
`cellhop-<container id>.<server pid>` per hierarchy, with:

- memory: `memory.max` and `memory.swap.max = 0` (v2), `memory.limit_in_bytes`
  and `memory.memsw.limit_in_bytes` (v1, where swap is accounted);
- pids: `pids.max`;
- cpu: a quota of N CPUs per period, `cpu.max` (v2) or `cpu.cfs_quota_us` (v1).

A v2 group can take a controller only when its parent's `cgroup.subtree_control`
enables it, which the kernel refuses for a non-root group that holds
processes itself: a server in such a group gets no v2 limits (it says so) unless
an operator delegates a group to it. The process joins its groups between fork
and exec; the groups are removed once their processes are gone, by the server,
at its exit, or (after a SIGKILL) by the next control plane to start: its
sweep() removes the groups whose server pid is no longer alive.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
PREFIX = "cellhop-"


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    mount: Path  # where it is mounted in this mount namespace
    controllers: frozenset[str]
    own: Path  # this process's group in it (absolute path under the mount)


def _mountinfo(text: str) -> list[tuple[str, str, str, str]]:
    """(root, mount point, fs type, super options) of each cgroup mount in /proc/self/mountinfo."""
    found = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        unescape = lambda s: s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")  # noqa: E731
        found.append((unescape(fields[3]), unescape(fields[4]), rfields[0], rfields[2]))
    return found


def hierarchies(mountinfo: str | None = None, proc_cgroup: str | None = None) -> list[Hierarchy]:
    """The cgroup hierarchies this process sees, with the controllers each one carries."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text() if mountinfo is None else mountinfo
        proc_cgroup = Path("/proc/self/cgroup").read_text() if proc_cgroup is None else proc_cgroup
    except OSError:
        return []
    own_v1: dict[str, str] = {}
    own_v2 = None
    for line in proc_cgroup.splitlines():
        number, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if number == "0" and names == "":
            own_v2 = path
        else:
            for name in names.split(","):
                own_v1[name] = path
    found = []
    for root, point, fstype, options in _mountinfo(mountinfo):
        if fstype == "cgroup2":
            if own_v2 is None:
                continue
            try:
                controllers = frozenset((Path(point) / "cgroup.controllers").read_text().split())
            except OSError:
                controllers = frozenset()
            own = own_v2
        else:
            controllers = frozenset(o for o in options.split(",") if o in own_v1)
            if not controllers:
                continue
            own = own_v1[next(iter(controllers))]
        # the mount shows `root` of the hierarchy; this process's group is a path from the hierarchy's root
        if own != root and not own.startswith(root.rstrip("/") + "/"):
            continue  # our group lies outside what this mount shows
        relative = own[len(root.rstrip("/")):].lstrip("/")
        found.append(Hierarchy(2 if fstype == "cgroup2" else 1, Path(point), controllers, Path(point) / relative))
    return found


def _v2_parent_takes(parent: Path, controller: str) -> bool:
    """True where a child of `parent` can have `controller` (enabling it in subtree_control if need be)."""
    try:
        if controller in (parent / "cgroup.subtree_control").read_text().split():
            return os.access(parent, os.W_OK)
        if controller not in (parent / "cgroup.controllers").read_text().split():
            return False
        (parent / "cgroup.subtree_control").write_text(f"+{controller}")
        return True
    except OSError:  # EBUSY: the group holds processes itself; EACCES: not delegated to us
        return False


@dataclass(frozen=True)
class Placement:
    """Where each controller's groups are made: {controller: (version, parent folder)}; missing ones: none."""

    parents: dict[str, tuple[int, Path]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # why a controller has no place here

    def enforcement(self, controller: str) -> str | None:
        """'cgroup v1' or 'cgroup v2' where the host gives it, else None."""
        place = self.parents.get(controller)
        return f"cgroup v{place[0]}" if place else None


def place(controllers=CONTROLLERS, parent: str | None = None, found: list[Hierarchy] | None = None) -> Placement:
    """Where groups with `controllers` can be made by this process. `parent`: a v2 group to use instead of
    this process's own (c.LocalRuntime.cgroup_parent)."""
    found = hierarchies() if found is None else found
    parents, reasons = {}, {}
    for controller in controllers:
        v2 = next((h for h in found if h.version == 2 and controller in h.controllers), None)
        v1 = next((h for h in found if h.version == 1 and controller in h.controllers), None)
        if v2 is not None:
            base = Path(parent) if parent else v2.own
            if _v2_parent_takes(base, controller):
                parents[controller] = (2, base)
            else:
                reasons[controller] = (f"the cgroup v2 group {base} cannot delegate the {controller} controller "
                                       "(it holds processes itself, or is not writable); set "
                                       "c.LocalRuntime.cgroup_parent to a group delegated to cellhop")
        elif v1 is not None:
            if os.access(v1.own, os.W_OK):
                parents[controller] = (1, v1.own)
            else:
                reasons[controller] = f"the cgroup v1 {controller} group {v1.own} is not writable by this server"
        else:
            reasons[controller] = f"no cgroup hierarchy here has the {controller} controller"
    return Placement(parents, reasons)


class ContainerGroups:
    """The groups of one container: made with their limits, joined by its process, removed after it."""

    def __init__(self, name: str, placement: Placement):
        self.name = f"{PREFIX}{name}.{os.getpid()}"  # the owner's pid: sweep() removes groups of dead owners
        self.placement = placement
        self.paths: dict[str, Path] = {}  # controller -> its group folder (v2: one folder for all)

    def create(self, memory: int | None = None, pids: int | None = None, cpus: int | None = None) -> None:
        """Make the groups of the limits that are set (OSError if the host refuses one)."""
        wanted = {"memory": memory, "pids": pids, "cpu": cpus}
        try:
            for controller, value in wanted.items():
                if not value or controller not in self.placement.parents:
                    continue
                version, parent = self.placement.parents[controller]
                path = parent / self.name
                if path not in self.paths.values():
                    path.mkdir(exist_ok=True)
                self.paths[controller] = path
                _write_limit(path, version, controller, value)
        except BaseException:
            self.remove(timeout=0)
            raise

    def folders(self) -> list[Path]:
        return sorted(set(self.paths.values()))

    def join(self, pid: int = 0) -> None:
        """Move `pid` (0: the calling process; safe between fork and exec) into every group."""
        pid = pid or os.getpid()
        for path in self.folders():
            fd = os.open(path / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, str(pid).encode())
            finally:
                os.close(fd)

    def oom_killed(self) -> bool:
        path = self.paths.get("memory")
        if path is None:
            return False
        version = self.placement.parents["memory"][0]
        try:
            text = (path / ("memory.events" if version == 2 else "memory.oom_control")).read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
        return False

    def kill(self) -> None:
        """SIGKILL every process left in the groups."""
        kill_groups(self.folders())

    def remove(self, timeout: float = 5.0) -> bool:
        """Kill what is left and remove the groups; True once all are gone."""
        return remove_groups(self.folders(), timeout)


def _write_limit(path: Path, version: int, controller: str, value: int) -> None:
    if controller == "memory":
        if version == 2:
            (path / "memory.max").write_text(str(value))
            _try_write(path / "memory.swap.max", "0")
        else:
            (path / "memory.limit_in_bytes").write_text(str(value))
            _try_write(path / "memory.memsw.limit_in_bytes", str(value))  # no swap beyond the limit
    elif controller == "pids":
        (path / "pids.max").write_text(str(value))
    elif controller == "cpu":
        quota = int(value) * CPU_PERIOD_US
        if version == 2:
            (path / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))


def _try_write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError:  # swap accounting is off on this host (no such file): nothing to limit
        pass


def _procs(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def kill_groups(folders) -> None:
    for path in folders:
        try:
            (path / "cgroup.kill").write_text("1")  # v2 (Linux 5.14+): the whole group at once
            continue
        except OSError:
            pass
        for pid in _procs(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def remove_groups(folders, timeout: float = 5.0) -> bool:
    """Kill what is left in `folders` and remove them, waiting up to `timeout` for the processes to go."""
    deadline = time.monotonic() + timeout
    left = [Path(p) for p in folders]
    while left:
        kill_groups(left)
        still = []
        for path in left:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    continue  # not ours to remove: leave it
                still.append(path)
        left = still
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return not left


def _owner_alive(folder: Path) -> bool:
    _, _, pid = folder.name.rpartition(".")
    if not pid.isdigit():
        return True  # not one this module named: leave it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def sweep(placement: Placement | None, timeout: float = 5.0) -> list[Path]:
    """Remove the groups of control planes that died without removing them (SIGKILL, a kernel that
    exited without closing its embedded control plane), killing what is left in them; returns them."""
    if placement is None:
        return []
    parents = sorted({parent for _, parent in placement.parents.values()})
    found = []
    for parent in parents:
        try:
            entries = [e for e in parent.iterdir() if e.name.startswith(PREFIX) and e.is_dir()]
        except OSError:
            continue
        found += [e for e in entries if not _owner_alive(e)]
    if found:
        remove_groups(found, timeout)
    return found

"""The program that enters a running local container and runs a command there (container_exec.py starts it).

Run as `python -I -S namespace_enter.py --config-fd N` (or `--config-file PATH`, read and deleted): the
server writes what to do as JSON on that descriptor, never on the command line or in this process's
environment (the container's secrets are among its variables). Standard library only, every module
imported before any namespace is entered: nothing is loaded from the container's files while this
process holds privileges. In order:

1. joins the container's control groups and takes its rlimit fallbacks (its limits hold for what runs);
2. opens the namespaces of the container's kernel (/proc/<pid>/ns/*) that differ from its own, checks that
   the pid is still that kernel (its start time), and enters them: the user namespace first (a rootless
   server's containers live in one bubblewrap made), then mount, uts, ipc, network, cgroup, time and pid;
3. forks (a pid namespace takes only children): the child drops every privilege (bounding set, ambient
   and inheritable capabilities, supplementary groups, uid and gid to the container's, capabilities to
   none, no_new_privs) and only then enters the working folder and executes the command, found on the
   container's PATH, in the container's mount namespace, with the container's environment;
4. the parent waits, passes SIGTERM, SIGINT, SIGHUP and SIGQUIT on, and ends as the child ended.
"""

import ctypes
import errno
import json
import os
import resource
import signal
import sys

CLONE = {"user": 0x10000000, "mnt": 0x00020000, "uts": 0x04000000, "ipc": 0x08000000, "net": 0x40000000,
         "cgroup": 0x02000000, "time": 0x00000080, "pid": 0x20000000}
ORDER = ("user", "mnt", "uts", "ipc", "net", "cgroup", "time", "pid")
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
CAP_VERSION_3 = 0x20080522
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
TERMINAL_VARIABLES = ("TERM", "COLUMNS", "LINES")  # a terminal's, from terminado's environment


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _fail(message: str, code: int = 125) -> None:
    os.write(2, f"cellhop: {message}\n".encode(errors="replace"))
    os._exit(code)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _read_config(argv: list[str]) -> dict:
    if len(argv) == 2 and argv[0] == "--config-fd":
        fd = int(argv[1])
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        os.close(fd)
        return json.loads(b"".join(chunks))
    if len(argv) == 2 and argv[0] == "--config-file":
        fd = os.open(argv[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.unlink(argv[1])
            with os.fdopen(fd, "rb", closefd=False) as f:
                return json.loads(f.read())
        finally:
            os.close(fd)
    _fail("usage: namespace_enter.py --config-fd N | --config-file PATH", 2)


def _start_time(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[19].decode()


def _take_limits(config: dict) -> None:
    for folder in config.get("cgroups", ()):
        with open(os.path.join(folder, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    for name, value in config.get("rlimits", {}).items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if config.get("affinity"):
        os.sched_setaffinity(0, config["affinity"])


def _open_namespaces(pid: int, start_time: str) -> list[tuple[str, int]]:
    opened = []
    for kind in ORDER:
        theirs, ours = f"/proc/{pid}/ns/{kind}", f"/proc/self/ns/{kind}"
        try:
            same = os.stat(theirs).st_ino == os.stat(ours).st_ino
        except FileNotFoundError:
            if kind == "time":
                continue  # a kernel without time namespaces
            raise
        if not same:
            opened.append((kind, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
    if _start_time(pid) != start_time:  # the kernel exited and its pid went to another process meanwhile
        raise FileNotFoundError(errno.ESRCH, "the container's kernel is gone")
    return opened


def _drop_privileges(libc, uid: int, gid: int, last_cap: int) -> None:
    """Everything that could give privileges back, gone, before the command is executed."""
    for cap in range(last_cap + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            _check(-1, f"dropping capability {cap} from the bounding set")
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    try:
        os.setgroups([])
    except PermissionError:  # a user namespace whose setgroups is denied: its groups are unmapped anyway
        pass
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    header = _CapHeader(CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    check = (_CapData * 2)()
    _check(libc.capget(ctypes.byref(header), check), "capget")
    if any(c.effective or c.permitted or c.inheritable for c in check) or os.getuid() != uid or os.getgid() != gid:
        _fail("could not drop every privilege; the command was not run")


def _parent(child: int) -> None:
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(125)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def main(argv: list[str]) -> None:
    config = _read_config(argv)
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    env = dict(config["env"])
    for name in TERMINAL_VARIABLES:
        if name in os.environ and config.get("terminal"):
            env[name] = os.environ[name]
    argv_inside, cwd = config["argv"], config["cwd"]
    try:
        _take_limits(config)
        opened = _open_namespaces(config["pid"], config["start_time"])
        for kind, fd in opened:  # the user namespace first: it owns the others
            _check(libc.setns(fd, CLONE[kind]), f"entering the container's {kind} namespace")
            os.close(fd)
    except FileNotFoundError:
        _fail("the container's kernel has exited; start the container again")
    except OSError as exc:
        _fail(f"could not enter the container ({exc})")
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    child = os.fork()
    if child:
        _parent(child)
    try:
        _drop_privileges(libc, config["uid"], config["gid"], last_cap)
    except OSError as exc:
        _fail(f"could not drop privileges ({exc}); the command was not run")
    try:
        os.chdir(cwd)
    except OSError as exc:
        _fail(f"cannot enter the container's working folder {cwd} ({exc.strerror})", 126)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        os.execvpe(argv_inside[0], argv_inside, env)
    except FileNotFoundError:
        _fail(f"{argv_inside[0]}: command not found in the container (its PATH: {env.get('PATH', '')})", 127)
    except OSError as exc:
        _fail(f"{argv_inside[0]}: cannot run it ({exc.strerror})", 126)


if __name__ == "__main__":
    main(sys.argv[1:])

"""GPU leases shared by two Unix users' servers (issue 20): lease and release per second under contention, and
the fairness of the host-wide queue, beside one user alone.

    python benchmarks/multi_user.py                        # as root; ~1-2 minutes on 2 cores
    python benchmarks/multi_user.py --seconds 10 --threads 8

It must run as root: it makes two Unix users and a group, and a host folder laid out as an admin's
`cellhop host-setup` leaves it (host_dir.SHARED_FOLDERS; the folder root:group 0755, each subfolder root:group
1770, sticky), all in a temp folder, and removes users, group and folder at the end, also on error. Each user's
side is a process running *as that user* (tests/unix_users.py) with the real Scheduler
(server_ext/scheduler.py) over that host folder (HostPlace(root, shared=True)), its private details in a
folder of its own, on a simulated inventory of two H100s. Every scenario gets a fresh host folder.

(a) one user: one process, T threads each looping acquire("H100") / hold / release for a fixed time:
    lease+release per second, with 1 thread (uncontended) and with more threads than GPUs (contended);
(b) two users: each user's process runs the same loop at the same time over the same host folder: the total
    per second, each user's count, and the fairness ratio (grants of the less-served user / grants of the
    more-served one; 1.0 is fair). Ratios: beside one user with the same threads, and with as many threads
    in all;
(c) the issue's fairness case: user A holds both GPUs and queues 50 requests more (one GPU each, held
    briefly), then user B queues one, then A lets its two GPUs go: the position B was served at among the
    grants after it asked (1 or 2 is fair; 51 is not), and the whole grant order (A's two first);
(d) exclusivity while lease files change: user A holds both GPUs for the fixed time, rewriting its leases all
    the while (idle, then busy: what usage_sampler.py does with lease.note_idle, far more often), while user
    B's T threads ask for a GPU the whole time; every grant to B is a GPU held by two.

Exclusivity is checked while measuring: every process records (gpu, start, end) of each hold with time.time()
(after acquire returned, before release), and no two holds of one GPU may overlap across both users; the
count is printed ("overlaps: 0") and saved, and a non-zero count fails the benchmark (exit status 1).

Writes benchmarks/results/multi_user-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# tests/ is not a package: its unix_users.py (make and remove Unix users, run this Python as one) is imported
# by putting the repository's tests/ folder on sys.path.
sys.path.insert(1, str(HERE.parent / "tests"))
from _common import format_table, write_results  # noqa: E402

GPUS = "H100:2"


# -- the side of one user (runs as that user) ------------------------------------------------------------
def worker(spec: dict) -> dict:
    """Run one user's scenario with the real Scheduler over the shared host folder; its figures."""
    from cellhop.errors import QueueTimeout
    from cellhop.gpu_request import GpuRequest
    from cellhop.server_ext.gpu_inventory import load_inventory
    from cellhop.server_ext.host_dir import HostPlace
    from cellhop.server_ext.scheduler import Scheduler

    inventory = load_inventory(GPUS, environ={})
    poll = {"poll_interval": spec["poll"]} if spec.get("poll") else {}
    scheduler = Scheduler(inventory, HostPlace(Path(spec["host"]), True, "bench"),
                          private_root=Path(spec["private"]), **poll)
    request = GpuRequest.parse("H100")
    threads, hold, mode = spec["threads"], spec["hold"], spec["mode"]
    holds: list[list] = []  # [gpu, start, end, thread, asked]
    errors: list[str] = []
    lock = threading.Lock()
    print("ready", flush=True)
    go = sys.stdin.readline().split()  # "go <start> <end>"
    if not go or go[0] != "go":
        raise SystemExit("worker: no go from the benchmark")
    start, end = float(go[1]), float(go[2])

    def one(i: int) -> bool:
        asked = time.time()
        timeout = max(0.05, end - asked) if mode == "ask" else 120  # "ask": until the end, timing out is fine
        try:
            allocation = scheduler.acquire(request, {"owner": spec["user"], "label": f"thread {i}"}, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - reported, never hidden
            if not (mode == "ask" and isinstance(exc, QueueTimeout)):
                with lock:
                    errors.append(f"thread {i}: {type(exc).__name__}: {exc}")
            return False
        t0 = time.time()
        if hold:
            time.sleep(hold)
        t1 = time.time()
        scheduler.release(allocation)
        with lock:
            holds.append([allocation.gpus[0].uuid, t0, t1, i, asked])
        return True

    def loop(i: int) -> None:
        time.sleep(max(0.0, start - time.time()))
        if mode == "queue":
            one(i)
        elif mode == "rewrite":  # hold a GPU till the end, saying idle then busy again (what usage_sampler does)
            try:
                allocation = scheduler.acquire(request, {"owner": spec["user"], "label": f"thread {i}"}, timeout=120)
            except Exception as exc:  # noqa: BLE001 - reported, never hidden
                with lock:
                    errors.append(f"thread {i}: {type(exc).__name__}: {exc}")
                return
            t0, lease = time.time(), allocation.leases[0]
            while time.time() < end:
                lease.note_idle(round(time.time(), 1))
                lease.note_idle(None)
            t1 = time.time()
            scheduler.release(allocation)
            with lock:
                holds.append([allocation.gpus[0].uuid, t0, t1, i, t0])
        else:
            while time.time() < end and one(i):
                pass

    blocking = []  # (allocation, start): the GPUs held until the benchmark says "release"
    for _ in range(spec.get("blockers", 0)):
        blocking.append((scheduler.acquire(request, {"owner": spec["user"], "label": "blocker"}, timeout=120),
                         time.time()))
    if blocking:
        print("held", flush=True)
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    if blocking:
        sys.stdin.readline()  # "release"
        for allocation, t0 in blocking:
            t1 = time.time()
            scheduler.release(allocation)
            with lock:
                holds.append([allocation.gpus[0].uuid, t0, t1, -1, t0])
    for t in pool:
        t.join()
    scheduler.close()
    return {"user": spec["user"], "holds": holds, "errors": errors}


# -- the host (runs as root) ---------------------------------------------------------------------------
def make_host(root: Path, gid: int) -> Path:
    """A host folder as an admin's setup leaves it: root:group 0755, its subfolders root:group 1770."""
    from cellhop.server_ext.host_dir import SHARED_FOLDERS

    root.mkdir()
    os.chown(root, 0, gid)
    os.chmod(root, 0o755)
    for name in SHARED_FOLDERS:
        sub = root / name
        sub.mkdir()
        os.chown(sub, 0, gid)
        os.chmod(sub, 0o1770)
    return root


def own_folder(path: Path, user) -> Path:
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    os.chmod(path, 0o700)
    return path


class Side:
    """One user's worker process, started and ready."""

    def __init__(self, user, spec: dict, tmp: Path):
        from unix_users import as_user_argv, user_env

        self.user = user
        self.err_path = tmp / f"worker-{user.name}-{time.monotonic_ns()}.err"
        self.err = open(self.err_path, "wb")
        argv = as_user_argv(user, [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)])
        self.proc = subprocess.Popen(argv, env=user_env(user), cwd="/", stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.fail("did not start")

    def go(self, start: float, end: float) -> None:
        self.say(f"go {start} {end}")

    def say(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, line: str) -> None:
        if self.proc.stdout.readline().strip() != line:
            self.fail(f"did not say {line!r}")

    def result(self, timeout: float = 300) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            self.fail(f"exited with status {self.proc.returncode}")
        return json.loads(out)

    def fail(self, what: str):
        self.stop()
        raise RuntimeError(f"the worker of user {self.user.name} {what}: "
                           + self.err_path.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.err.close()


def overlaps(holds: list[list]) -> list[tuple]:
    """Pairs of holds of one GPU (any user) whose [start, end] overlap."""
    found, by_gpu = [], {}
    for h in holds:
        by_gpu.setdefault(h[0], []).append(h)
    for gpu, hs in by_gpu.items():
        hs.sort(key=lambda h: h[1])
        latest = None  # the hold that ends last so far
        for h in hs:
            if latest is not None and h[1] < latest[2]:
                found.append((gpu, latest, h))
            if latest is None or h[2] > latest[2]:
                latest = h
    return found


class Bench:
    def __init__(self, tmp: Path, users: list, gid: int, hold: float, poll: float | None):
        self.tmp, self.users, self.gid, self.hold, self.poll = tmp, users, gid, hold, poll
        self.round = 0
        self.overlap_pairs: list = []
        self.errors: list[str] = []

    def _sides(self, specs: list[tuple]) -> list[Side]:
        self.round += 1
        host = make_host(self.tmp / f"host-{self.round}", self.gid)
        sides = []
        try:
            for user, spec in specs:
                private = own_folder(self.tmp / f"private-{self.round}-{user.name}", user)
                sides.append(Side(user, {**spec, "host": str(host), "private": str(private), "user": user.name,
                                         "poll": self.poll}, self.tmp))
        except BaseException:
            for side in sides:
                side.stop()
            raise
        return sides

    def _collect(self, sides: list[Side]) -> tuple[list[dict], int]:
        """Each side's result, and how many overlapping holds of one GPU they had."""
        try:
            results = [side.result() for side in sides]
        finally:
            for side in sides:
                side.stop()
        for r in results:
            self.errors += [f"{r['user']}: {e}" for e in r["errors"]]
        found = overlaps([h for r in results for h in r["holds"]])
        self.overlap_pairs += found
        return results, len(found)

    def loop(self, users: list, threads: int, seconds: float) -> dict:
        """(a)/(b): `threads` threads per user loop acquire/hold/release for `seconds`."""
        hold = self.hold
        sides = self._sides([(u, {"mode": "loop", "threads": threads, "hold": hold}) for u in users])
        start = time.time() + 0.5
        end = start + seconds
        for side in sides:
            side.go(start, end)
        results, overlapping = self._collect(sides)
        counts = {label: sum(1 for h in r["holds"] if start <= h[1] < end) for label, r in zip("AB", results)}
        total = sum(counts.values())
        out = {"users": len(users), "threads_per_user": threads, "seconds": seconds,
               "grants": total, "per_second": total / seconds, "per_user": counts,
               "user_names": {label: r["user"] for label, r in zip("AB", results)}, "hold_s": hold,
               "holds_checked": sum(len(r["holds"]) for r in results), "overlaps": overlapping}
        if len(users) > 1:
            out["fairness"] = min(counts.values()) / max(counts.values()) if max(counts.values()) else None
        return out

    def fairness(self, many: int, hold: float) -> dict:
        """(c): user A holds both GPUs and queues `many` requests more, then user B queues one, then A lets the
        two go: where B was served among the grants after it asked (1 is fair)."""
        a, b = self.users
        sides = self._sides([(a, {"mode": "queue", "threads": many, "hold": hold, "blockers": 2}),
                             (b, {"mode": "queue", "threads": 1, "hold": hold})])
        queue = self.tmp / f"host-{self.round}" / "queue"
        side_a, side_b = sides
        try:
            side_a.go(time.time(), 0)
            side_a.expect("held")
            waiting_a = self._wait_tickets(queue, a.uid, many)
            side_b.go(time.time(), 0)
            waiting_b = self._wait_tickets(queue, b.uid, 1)
            side_a.say("release")
        except BaseException:
            for side in sides:
                side.stop()
            raise
        results, overlapping = self._collect(sides)
        grants = sorted([("A", h[1]) for h in results[0]["holds"]] + [("B", h[1]) for h in results[1]["holds"]],
                        key=lambda g: g[1])
        out = {"requests_a": many, "hold_s": hold, "a_waiting_when_b_asked": waiting_a,
               "b_waiting_when_a_released": waiting_b, "b_served": bool(results[1]["holds"]),
               "order": "".join(g[0] for g in grants), "overlaps": overlapping}
        if results[1]["holds"]:
            b_asked, b_granted = results[1]["holds"][0][4], results[1]["holds"][0][1]
            out["b_position_after_asking"] = 1 + sum(1 for g in grants if g[0] == "A" and b_asked < g[1] < b_granted)
            out["b_waited_s"] = b_granted - b_asked
        return out

    def rewriting(self, threads: int, seconds: float) -> dict:
        """(d): user A holds both GPUs for `seconds`, rewriting its leases all the while; user B's `threads`
        threads ask for one the whole time. Every grant to B is one GPU held by two."""
        sides = self._sides([(self.users[0], {"mode": "rewrite", "threads": 2, "hold": 0}),
                             (self.users[1], {"mode": "ask", "threads": threads, "hold": 0.001})])
        start = time.time() + 0.5
        sides[0].go(start, start + seconds + 0.5)
        sides[1].go(start + 0.5, start + seconds + 0.5)  # once A holds both
        results, overlapping = self._collect(sides)
        a_held = {h[0]: (h[1], h[2]) for h in results[0]["holds"]}  # gpu -> when A held it
        during = [h for h in results[1]["holds"] if a_held.get(h[0], (0, 0))[0] <= h[1] < a_held.get(h[0], (0, 0))[1]]
        return {"seconds": seconds, "threads_b": threads, "overlaps": overlapping, "grants_to_b": len(during),
                "grants_to_b_after_a_let_go": len(results[1]["holds"]) - len(during)}

    @staticmethod
    def _wait_tickets(queue: Path, uid: int, count: int, timeout: float = 60) -> int:
        """How many live-looking queue tickets of `uid` there are, once `count` (or after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = sum(1 for n in os.listdir(queue) if n.endswith(".ticket") and f".{uid}." in n)
            if waiting >= count or time.monotonic() > deadline:
                return waiting
            time.sleep(0.01)


def measure(args, tmp: Path) -> dict:
    from unix_users import make_group, make_user

    group = make_group("chbg")
    made = {"group": group, "users": []}
    try:
        users = []
        for _ in range(2):
            users.append(make_user("chbu", (group,)))
            made["users"].append(users[-1])
        import grp

        bench = Bench(tmp, users, grp.getgrnam(group).gr_gid, args.hold, args.poll_interval)
        single = {t: bench.loop(users[:1], t, args.seconds) for t in sorted({1, 2, args.threads, 2 * args.threads})}
        two = {t: bench.loop(users, t, args.seconds) for t in (1, args.threads)}
        fair = bench.fairness(args.queued, args.queue_hold)
        rewriting = bench.rewriting(args.threads, args.seconds)
    finally:
        cleanup_users(made)
    return {"single": single, "two": two, "fairness_case": fair, "two_rewriting_leases": rewriting,
            "overlaps": len(bench.overlap_pairs),
            "overlap_examples": bench.overlap_pairs[:5], "errors": bench.errors}


def cleanup_users(made: dict) -> None:
    from unix_users import remove_group, remove_user

    for user in made["users"]:
        remove_user(user)
    remove_group(made["group"])


def report(figures: dict) -> list[dict]:
    """The table's rows: grants (lease+release) per second, and the ratios beside one user alone."""
    single, two = figures["single"], figures["two"]

    def row(scenario: str, f: dict, same=None, total=None) -> dict:
        per_user = " / ".join(f"{c / f['seconds']:.0f}" for c in f["per_user"].values())
        return {"scenario": scenario, "threads/user": f["threads_per_user"], "grants/s": f"{f['per_second']:.0f}",
                "per user (A / B)": per_user, "fairness": f"{f['fairness']:.2f}" if f.get("fairness") else "",
                "vs one user, same threads/user": f"{f['per_second'] / same:.2f}x" if same else "",
                "vs one user, same threads in all": f"{f['per_second'] / total:.2f}x" if total else "",
                "overlaps": f["overlaps"]}

    rows = [row("one user", f) for f in single.values()]
    for t, f in two.items():
        rows.append(row("two users", f, single[t]["per_second"], single.get(2 * t, {}).get("per_second")))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each loop scenario runs")
    parser.add_argument("--threads", type=int, default=4, help="threads per user in the contended scenarios")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds each GPU is held in the loops")
    parser.add_argument("--queued", type=int, default=50, help="requests user A queues in the fairness case")
    parser.add_argument("--queue-hold", type=float, default=0.05, help="seconds each is held in the fairness case")
    parser.add_argument("--poll-interval", type=float, default=None,
                        help="the Scheduler's poll_interval (default: its own); results then go to "
                             "multi_user-poll<ms>ms-<date>.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    from unix_users import can_make_users

    why = can_make_users()
    if why:
        raise SystemExit(f"multi_user.py: {why} (run it as root)")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="cellhop-bench-mu-"))
    try:
        os.chmod(tmp, 0o755)  # each user reaches its own folders and the host folder in there
        figures = measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures["settings"] = {"inventory": GPUS, "seconds": args.seconds, "hold_s": args.hold,
                           "request": "H100 (one GPU)", "clock": "time.time(), one host",
                           "poll_interval_s": args.poll_interval or _poll_interval(),
                           "load_average_before_after": [load_before[0], os.getloadavg()[0]]}
    rows = report(figures)
    figures["table"] = rows
    print(format_table(rows, list(rows[0])))
    fair = figures["fairness_case"]
    if fair.get("b_served"):
        print(f"fairness case: A held both GPUs and queued {fair['requests_a']} "
              f"({fair['a_waiting_when_b_asked']} waiting when B asked); "
              f"B served at position {fair['b_position_after_asking']} after asking "
              f"({fair['b_waited_s'] * 1e3:.0f} ms); grant order {fair['order']}")
    else:
        print(f"fairness case: B was NOT served; grant order {fair['order']}")
    rewriting = figures["two_rewriting_leases"]
    print(f"A held both GPUs {rewriting['seconds']:g} s rewriting its leases (idle, busy) while B's "
          f"{rewriting['threads_b']} threads asked: {rewriting['grants_to_b']} grant(s) to B (0 is right)")
    print(f"overlaps: {figures['overlaps']}")
    for e in figures["errors"]:
        print(f"error: {e}")
    name = "multi_user" if args.poll_interval is None else f"multi_user-poll{args.poll_interval * 1e3:g}ms"
    path = write_results(name, figures)
    print(f"written to {path}")
    failed = figures["overlaps"] or figures["errors"] or not fair.get("b_served") or rewriting["grants_to_b"]
    return 1 if failed else 0


def _poll_interval() -> float:
    from cellhop.server_ext.scheduler import POLL_INTERVAL

    return POLL_INTERVAL


if __name__ == "__main__":
    sys.exit(main())

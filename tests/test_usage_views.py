"""The usage and cost views of issue 20 (one GPU box, many users).

- the totals (usage_report.py) of real usage-log records: today and this month, per GPU type and user, a
  lease still held counted to now, a type without a price costing "unknown" (None), never 0;
- a real cellhop server with c.Cellhop.gpu_prices = {"H100": 3.6}: %%remote cells on an H100 and on an
  A10G (no price); the H100 cell's status line says its cost, GET cellhop/api/usage adds up to its leases,
  `%gpu --usage` in the kernel names the numbers, and `cellhop usage --json` (a subprocess reading the
  same folder, no server) reports the same totals, `--all` as root lists the user;
- `cellhop usage --all` as another real user is refused (the usage files are each user's own), and as root
  it totals every user of a shared host folder and finds an idle holder of another user.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
from server_kernel_client import run

from cellhop.server_ext.usage_log import LeaseUse, UsageLog
from cellhop.server_ext.usage_report import effective_prices, mean_busy, per_user, period_report, totals

pytestmark = pytest.mark.timeout(240)
PRICE = 3.6


# -- the totals --------------------------------------------------------------------------------------
def _log(tmp_path: Path, now: float) -> list[LeaseUse]:
    """Real usage-log records: an H100 lease of 2 h today, one across the month's start, an A10G still held."""
    log = UsageLog(tmp_path)
    month = datetime.fromtimestamp(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    log.started("a.lock", "ann", "GPU-1", "H100", "nb", "%%remote", now - 3 * 3600)
    log.ended("a.lock", now - 3600, 0.5)
    log.started("b.lock", "ann", "GPU-1", "H100", "nb", "%%remote", month - 3600)
    log.ended("b.lock", month + 3600, 1.0)
    log.started("c.lock", "ann", "GPU-2", "A10G", "nb", "%%remote", now - 1800)  # still held
    log.close()
    return log.leases()


def test_totals_count_today_the_month_and_open_leases_and_never_price_an_unpriced_type(tmp_path):
    now = datetime.now().replace(day=15, hour=12, minute=0, second=0, microsecond=0).timestamp()
    uses = _log(tmp_path, now)
    report = period_report(uses, {"H100": PRICE}, now)
    today, month = report["today"], report["month"]
    assert today["by_type"]["H100"] == {"gpu_hours": pytest.approx(2), "cost": pytest.approx(2 * PRICE)}
    assert today["by_type"]["A10G"] == {"gpu_hours": pytest.approx(0.5), "cost": None}  # open: counted to now
    assert today["cost"] is None and today["gpu_hours"] == pytest.approx(2.5)  # unknown, not 2 * 3.6
    assert month["by_type"]["H100"]["gpu_hours"] == pytest.approx(3)  # the hour before the 1st is last month's
    assert month["resets"] > now
    priced = totals(uses, {"H100": PRICE, "A10G": 1.0}, since=0, now=now)
    assert priced["cost"] == pytest.approx(4 * PRICE + 0.5)
    assert totals(uses, {}, since=0, now=now)["cost"] is None  # no prices: no cost at all
    assert mean_busy(uses, now=now) == pytest.approx((0.5 * 2 + 1.0 * 2) / 4)  # the open one is not measured
    [(user, own)] = per_user(uses, {"H100": PRICE}, since=0, now=now).items()
    assert user == "ann" and own["leases"] == 3 and own["gpu_hours"] == pytest.approx(4.5)


def test_the_admins_prices_win_and_a_bad_price_is_said_at_start():
    from traitlets import TraitError

    from cellhop.server_ext.config import Cellhop

    assert effective_prices({"H100": 3}, {"H100": 2, "L4": 1}) == {"H100": 3.0, "L4": 1.0}
    with pytest.raises(TraitError, match=r"gpu_prices\['H100'\] must be a number >= 0"):
        Cellhop(gpu_prices={"H100": "cheap"})
    with pytest.raises(ValueError, match=r"gpu_prices\['L4'\]"):
        effective_prices({}, {"L4": -1})


def test_another_users_holder_reads_who_since_and_idle():
    from cellhop.usage_text import describe_holder

    now = datetime.now().replace(hour=12, minute=0, second=0, microsecond=0).timestamp()
    theirs = {"user": "bob", "since": now - 3600, "idle_since": now - 25 * 60, "owner": "user bob"}
    assert describe_holder(theirs, {}, now) == "held by user bob since 11:00, idle for 25 min"
    assert describe_holder({**theirs, "idle_since": None}, {}, now) == "held by user bob since 11:00, busy"
    mine = {"owner": "nb.ipynb", "container": "c1", "user": "me"}
    assert describe_holder(mine, {"c1": "held H100 for 1.0 h at 0% busy"}, now) == \
        "held by nb.ipynb (container c1) ⚠ idle holder: held H100 for 1.0 h at 0% busy"


# -- a real server, kernel and CLI -------------------------------------------------------------------
@pytest.fixture
def cellhop_settings():
    return {"gpu_prices": {"H100": PRICE}, "monthly_gpu_hours": 100.0, "usage_sample_interval": 0.5}


def _status_line(msgs) -> str:
    texts = [m["content"]["data"]["text/plain"] for m in msgs
             if m["msg_type"] in ("display_data", "update_display_data")
             and "cellhop-status" in m["content"]["data"].get("text/html", "")]
    return texts[-1] if texts else ""


def _cli(args: list[str], config_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config_dir)}
    return subprocess.run([sys.executable, "-m", "cellhop.server_ext.cli", "usage", *args],
                          capture_output=True, text=True, env=env, timeout=60)


async def test_a_cells_cost_the_rest_view_gpu_usage_and_the_cli_agree(start_kernel, control_plane, jp_fetch,
                                                                      runtime_root, tmp_path):
    _, kc = await start_kernel()
    content, _, msgs = await run(kc, "%%remote --gpu H100\nimport time\ntime.sleep(1.5)")
    assert content["status"] == "ok", content
    line = _status_line(msgs)
    ran, cost = re.search(r"ran ([\d.]+) s · cost ([\d.]+)", line).groups()
    assert float(cost) == pytest.approx(float(ran) * PRICE / 3600, abs=1e-4), line
    content, _, msgs = await run(kc, "%%remote --gpu A10G\nx = 1")
    assert content["status"] == "ok" and "ran " in _status_line(msgs) and "cost" not in _status_line(msgs)

    content, out, _ = await run(kc, "%gpu --usage")
    assert content["status"] == "ok", content
    assert re.search(r"Today: +0\.\d{4} GPU-hours \(A10G 0\.\d{4}, H100 0\.\d{4}\), cost unknown: no price "
                     r"for A10G", out), out
    assert "Prices per GPU-hour: H100 3.60" in out and "of 100 GPU-hours used this month" in out, out
    assert "GPUs held now: 2 (no per-user cap)" in out, out

    for container in control_plane.manager.list():  # the leases end
        await asyncio.to_thread(control_plane.manager.stop, container.id)
    view = json.loads((await jp_fetch("cellhop", "api", "usage")).body)
    assert set(view) == {"user", "host_wide", "host_note", "prices", "today", "month", "max_gpus_per_user",
                         "held_now", "leases", "idle_holders"}
    assert view["prices"] == {"H100": PRICE} and view["held_now"] == 0 and view["host_wide"] is False
    h100 = [u for u in view["leases"] if u["gpu_type"] == "H100"]
    assert len(h100) == 1 and h100[0]["end"] is not None
    hours = (h100[0]["end"] - h100[0]["start"]) / 3600
    month = view["month"]
    assert hours > 0 and month["by_type"]["H100"]["gpu_hours"] == pytest.approx(hours)
    assert month["by_type"]["H100"]["cost"] == pytest.approx(hours * PRICE)
    assert month["by_type"]["A10G"]["cost"] is None and month["cost"] is None  # no price: not a made-up 0
    assert month["budget_hours"] == 100.0 and month["resets"] > h100[0]["end"]
    assert view["max_gpus_per_user"] is None and view["idle_holders"] == []

    config_dir = tmp_path / "usage-config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(
        {"Cellhop": {"runtime_root": str(runtime_root), "gpu_prices": {"H100": PRICE}}}))
    done = await asyncio.to_thread(_cli, ["--json"], config_dir)
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    assert cli["user"] == view["user"] and cli["month"]["by_type"] == month["by_type"]
    assert cli["today"]["by_type"] == view["today"]["by_type"]
    if os.geteuid() == 0:
        done = await asyncio.to_thread(_cli, ["--all", "--json"], config_dir)
        assert done.returncode == 0, done.stderr
        users = json.loads(done.stdout)["users"]
        assert users[view["user"]]["by_type"] == month["by_type"], users


# -- the admin's view over a shared host folder ------------------------------------------------------
ALICE_HOLDS = """
import sys, time
from pathlib import Path
from cellhop.server_ext.host_files import HeldFile
from cellhop.server_ext.leases import user_name
from cellhop.server_ext.usage_log import UsageLog
host, now, me = Path(sys.argv[1]), time.time(), user_name()
log = UsageLog(host / "usage")
log.started("done.lock", me, "GPU-0", "H100", "nb", "%%remote", now - 7200)
log.ended("done.lock", now - 3600, 0.25)
lease = HeldFile(host / "leases", "GPU-simulated-h100-1", "lock",
                 {"user": me, "since": now - 7200, "idle_since": now - 5400})
log.started(lease.name, me, "GPU-simulated-h100-1", "H100", "nb", "%%remote", now - 7200)
print("holding", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def alice():
    from unix_users import can_make_users, make_group, make_user, remove_group, remove_user

    if can_make_users() is not None:
        pytest.skip(can_make_users())
    group = make_group()
    user = make_user("chu", groups=(group,))
    parent = Path(tempfile.mkdtemp(prefix="cellhop-host-", dir="/tmp"))
    os.chmod(parent, 0o755)
    try:
        yield user, group, parent
    finally:
        remove_user(user)
        remove_group(group)
        shutil.rmtree(parent, ignore_errors=True)


def test_the_admin_view_totals_every_user_and_finds_idle_holders_and_is_root_only(alice):
    import grp

    from unix_users import as_user_argv, user_env

    user, group, parent = alice
    host = parent / "host"  # as an admin sets it up (cellhop host-setup)
    host.mkdir(mode=0o755)
    for name in ("leases", "queue", "grants", "usage"):
        (host / name).mkdir()
        os.chown(host / name, 0, grp.getgrnam(group).gr_gid)
        os.chmod(host / name, 0o1770)
    config_dir = parent / "config"
    config_dir.mkdir(mode=0o755)
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(
        {"Cellhop": {"host_dir": str(host), "gpu_prices": {"H100": 2.0}}}))
    os.chmod(config_dir / "jupyter_server_config.json", 0o644)
    holder = subprocess.Popen(as_user_argv(user, [sys.executable, "-c", ALICE_HOLDS, str(host)]),
                              env=user_env(user), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        refused = subprocess.run(
            as_user_argv(user, [sys.executable, "-m", "cellhop.server_ext.cli", "usage", "--all"]),
            capture_output=True, text=True, timeout=60,
            env=user_env(user, {"JUPYTER_CONFIG_DIR": str(config_dir)}))
        assert refused.returncode == 1 and "only root may read them all" in refused.stderr, refused
        own = subprocess.run(as_user_argv(user, [sys.executable, "-m", "cellhop.server_ext.cli", "usage", "--json"]),
                             capture_output=True, text=True, timeout=60,
                             env=user_env(user, {"JUPYTER_CONFIG_DIR": str(config_dir)}))
        assert own.returncode == 0, own.stderr
        assert json.loads(own.stdout)["host_wide"] is True

        done = _cli(["--all", "--json"], config_dir)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        mine = report["users"][user.name]
        assert mine["leases"] == 2 and mine["busy"] == pytest.approx(0.25)
        assert mine["gpu_hours"] >= 3 - 0.01 and mine["cost"] == pytest.approx(mine["gpu_hours"] * 2.0)
        [idle] = report["idle_holders"]
        assert idle["user"] == user.name and idle["gpu_type"] == "H100" and idle["idle_minutes"] >= 89
        text = _cli(["--all"], config_dir)
        assert re.search(rf"Idle holder: {user.name} holds H100 GPU-simulated-h100-1 since .*, idle for 9\d min",
                         text.stdout), text.stdout
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)

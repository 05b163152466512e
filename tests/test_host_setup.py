"""`cellhop host-setup` (run as root, as an admin runs it) makes the host folder every user's server shares
GPU leases in, and `cellhop doctor` says where leases live: checked with real Unix users (tests/unix_users.py),
a group the set-up makes, and processes run as a member and as a non-member of it."""

from __future__ import annotations

import grp
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cellhop.server_ext.host_dir import SHARED_FOLDERS, read_settings
from unix_users import as_user_argv, can_make_users, make_user, remove_group, remove_user, user_env

pytestmark = [pytest.mark.timeout(300), pytest.mark.skipif(can_make_users() is not None, reason=f"{can_make_users()}")]
CLI = [sys.executable, "-m", "cellhop.server_ext.cli"]


def _setup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "host-setup", *args], capture_output=True, text=True, timeout=120)


def _as(user, code: str, *args: str, env: dict | None = None, groups: bool = True) -> subprocess.CompletedProcess:
    """Run Python `code` as `user` (with its groups as a new login gets them, or with none: a session that
    began before the user was added to a group)."""
    argv = as_user_argv(user, [sys.executable, "-c", code, *args])
    if not groups:
        argv = [a.replace("--init-groups", "--clear-groups") for a in argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=user_env(user, env))


@pytest.fixture
def base():
    """A folder every user may enter (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="cellhop-hs-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def site(base):
    """The folder set up by `cellhop host-setup` with a new group; a member, a second member, a non-member."""
    group = f"chg{secrets.token_hex(3)}"
    member, other, outsider = make_user(), make_user(), make_user()
    try:
        done = _setup("--dir", str(base / "host"), "--group", group, "--max-gpus-per-user", "2",
                      "--price", "H100=2.5", "--add-user", member.name, "--add-user", other.name)
        yield base / "host", group, member, other, outsider, done
    finally:
        for user in (member, other, outsider):
            remove_user(user)
        remove_group(group)


UNUSABLE = "import sys; from pathlib import Path; from cellhop.server_ext.host_dir import unusable; " \
           "print('UNUSABLE', unusable(Path(sys.argv[1])))"


def test_it_makes_the_folder_the_group_and_the_settings_and_members_can_use_it(site):
    host, group, member, other, outsider, done = site
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"made the group {group}" in out and f"added {member.name} to the group {group}" in out, out
    assert "log in again" in out and "restart your Jupyter servers" in out, out
    assert f"c.Cellhop.host_dir = '{host}'" in out, out  # not the default folder: users must name it
    gid = grp.getgrnam(group).gr_gid
    info = os.lstat(host)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o755)
    for name in SHARED_FOLDERS:
        info = os.lstat(host / name)
        assert stat.S_ISDIR(info.st_mode) and (info.st_uid, info.st_gid) == (0, gid), name
        assert stat.S_IMODE(info.st_mode) == 0o1770 and info.st_mode & stat.S_ISVTX, (name, oct(info.st_mode))
    info = os.lstat(host / "settings.json")
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o644)
    assert json.loads((host / "settings.json").read_text()) == {"max_gpus_per_user": 2, "gpu_prices": {"H100": 2.5}}
    settings = read_settings(host / "settings.json")
    assert settings.problem is None and settings.max_gpus_per_user == 2 and settings.gpu_prices == {"H100": 2.5}
    assert settings.monthly_gpu_hours is None

    # A member may use it; a non-member is told why not.
    ran = _as(member, UNUSABLE, str(host))
    assert "UNUSABLE None" in ran.stdout, ran.stdout + ran.stderr
    ran = _as(outsider, UNUSABLE, str(host))
    assert "UNUSABLE this user may not write in leases/ (is it in the folder's group?)" in ran.stdout, \
        ran.stdout + ran.stderr

    # A member's lease file is theirs: another member can neither remove, rename nor rewrite it (sticky, 0644).
    made = _as(member, "import sys; from pathlib import Path; from cellhop.server_ext.host_files import HeldFile; "
               "f = HeldFile(Path(sys.argv[1]), 'GPU-x', 'lock', {'user': 'me'}); f.close(remove=False); "
               "print('MADE', f.path)", str(host / "leases"))
    assert "MADE" in made.stdout, made.stdout + made.stderr
    lease = made.stdout.split("MADE ", 1)[1].strip()
    tried = _as(other, "import os, sys\nfor what, act in (('unlink', lambda: os.unlink(sys.argv[1])), "
                "('rename', lambda: os.rename(sys.argv[1], sys.argv[1] + '.mine')), "
                "('write', lambda: open(sys.argv[1], 'w'))):\n"
                "    try:\n        act(); print(what, 'DONE')\n"
                "    except PermissionError:\n        print(what, 'REFUSED')\n", lease)
    assert tried.stdout.split() == ["unlink", "REFUSED", "rename", "REFUSED", "write", "REFUSED"], \
        tried.stdout + tried.stderr


def test_running_it_again_fixes_permissions_merges_settings_and_keeps_data(site):
    host, group, member, other, outsider, done = site
    assert done.returncode == 0, done.stdout + done.stderr
    kept = host / "usage" / "kept.json"
    kept.write_text("{}")
    (host / "leases").chmod(0o777)  # lost its sticky bit: anyone could remove anyone's lease
    os.chown(host / "queue", member.uid, -1)
    again = _setup("--dir", str(host), "--monthly-gpu-hours", "100", "--price", "A10G=0.8")  # the group is kept
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"fixed {host}/leases/: mode 0777 -> 1770" in again.stdout, again.stdout
    assert f"fixed {host}/queue/: owner {member.name}:" in again.stdout, again.stdout
    assert kept.read_text() == "{}"
    gid = grp.getgrnam(group).gr_gid
    for name in SHARED_FOLDERS:
        info = os.lstat(host / name)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, gid, 0o1770), name
    settings = read_settings(host / "settings.json")
    assert settings.problem is None, settings.problem
    assert (settings.max_gpus_per_user, settings.monthly_gpu_hours) == (2, 100)
    assert settings.gpu_prices == {"H100": 2.5, "A10G": 0.8}
    (host / "settings.json").chmod(0o666)  # anyone could change the limits
    third = _setup("--dir", str(host))
    assert third.returncode == 0 and f"fixed {host}/settings.json: mode 0666 -> 0644" in third.stdout, third.stdout
    assert read_settings(host / "settings.json").gpu_prices == {"H100": 2.5, "A10G": 0.8}
    fourth = _setup("--dir", str(host), "--add-user", member.name)  # already a member
    assert fourth.returncode == 0 and "was already set up: nothing to change" in fourth.stdout, fourth.stdout
    assert kept.exists()

    # The admin's file, broken by hand: never overwritten; said with the folders still repaired.
    (host / "settings.json").write_text('{"max_gpus_per_user": "two"}')
    (host / "grants").chmod(0o755)
    broken = _setup("--dir", str(host))
    assert broken.returncode == 0 and f"fixed {host}/grants/: mode 0755 -> 1770" in broken.stdout, broken.stdout
    assert "WARNING" in broken.stdout and "max_gpus_per_user must be a whole number" in broken.stdout, broken.stdout
    refused = _setup("--dir", str(host), "--max-gpus-per-user", "1")
    assert refused.returncode == 1 and "holds invalid settings" in refused.stderr, refused.stderr
    assert (host / "settings.json").read_text() == '{"max_gpus_per_user": "two"}'


def test_it_refuses_a_symlink_a_folder_of_another_user_bad_values_and_non_root(base):
    user = make_user()
    try:
        (base / "real").mkdir()
        (base / "link").symlink_to(base / "real")
        refused = _setup("--dir", str(base / "link"))
        assert refused.returncode == 1 and "is a symlink" in refused.stderr, refused.stderr
        theirs = base / "theirs"
        theirs.mkdir()
        os.chown(theirs, user.uid, user.gid)
        refused = _setup("--dir", str(theirs))
        assert refused.returncode == 1 and f"belongs to uid {user.uid}, not root" in refused.stderr, refused.stderr
        refused = _setup("--dir", str(theirs / "below"))  # its owner could swap what is below it
        assert refused.returncode == 1 and "could swap" in refused.stderr, refused.stderr
        for bad, said in ((["--price", "H100"], "give TYPE=PRICE"), (["--max-gpus-per-user", "-1"], "whole number"),
                          (["--add-user", "nobody-such-" + secrets.token_hex(2)], "no such user")):
            refused = _setup("--dir", str(base / "fresh"), *bad)
            assert refused.returncode == 1 and said in refused.stderr, refused.stderr
        assert not (base / "fresh").exists() and os.listdir(theirs) == []  # refused before anything changed
        ran = _as(user, "import sys; from cellhop.server_ext.cli import main; sys.exit(main(sys.argv[1:]))",
                  "host-setup", "--dir", str(base / "fresh"))
        assert ran.returncode == 1 and "must run as root" in ran.stderr, ran.stderr
    finally:
        remove_user(user)


DOCTOR = "from cellhop.server_ext.doctor import report; from cellhop.server_ext.doctor_host import check_host_dir; " \
         "import sys; print(report(check_host_dir(*sys.argv[1:]))[0])"


def test_doctor_says_where_leases_live_and_why(site, base):
    from cellhop.server_ext.doctor_host import check_host_dir

    host, group, member, other, outsider, done = site
    assert done.returncode == 0, done.stdout + done.stderr
    leases, settings = check_host_dir(configured=str(host))
    assert leases.ok and f"host-wide at {host} (c.Cellhop.host_dir)" in leases.detail, leases
    assert settings.ok and "at most 2 GPU(s) at once per user" in settings.detail and "H100 2.5" in settings.detail
    [alone] = check_host_dir(configured="", system=str(base / "none"), per_user_root=base / "mine")
    assert not alone.ok and not alone.essential, alone  # a warning: right where one user runs cellhop
    assert f"this user's own ({base / 'mine'})" in alone.detail and "was not used: it does not exist" in alone.detail
    assert alone.fix.startswith(f"sudo cellhop host-setup --dir {base / 'none'}"), alone.fix

    # The whole `cellhop doctor`, as a member, with host_dir in the user's Jupyter config.
    config = base / "config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(f"c.Cellhop.host_dir = {str(host)!r}\n")
    config.chmod(0o755)
    (config / "jupyter_server_config.py").chmod(0o644)
    ran = _as(member, "import sys; from cellhop.server_ext.cli import main; sys.exit(main(['doctor']))",
              env={"JUPYTER_CONFIG_DIR": str(config)})
    assert f"[ok  ] GPU leases: host-wide at {host} (c.Cellhop.host_dir)" in ran.stdout, ran.stdout + ran.stderr
    assert f"[ok  ] host settings: in force for {member.name}: at most 2 GPU(s)" in ran.stdout, ran.stdout

    # A non-member: per-user, with the reason and the command that adds them.
    ran = _as(outsider, DOCTOR, "", str(host))
    assert "[--  ] GPU leases: this user's own" in ran.stdout, ran.stdout + ran.stderr
    assert f"{host} was not used: this user may not write in leases/" in ran.stdout, ran.stdout
    assert f"to fix: sudo cellhop host-setup --dir {host} --add-user {outsider.name}, then log in again" in ran.stdout
    # A member whose login session began before they were added: log in again.
    ran = _as(member, DOCTOR, "", str(host), groups=False)
    assert "to fix: log in again (a new login session): you were added to the group " f"{group}" in ran.stdout, \
        ran.stdout + ran.stderr
    # A settings file someone but root may change is not used, and said so.
    (host / "settings.json").chmod(0o666)
    leases, settings = check_host_dir(configured=str(host))
    assert leases.ok and not settings.ok and "only root may own and change it" in settings.detail, settings

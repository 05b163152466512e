"""`cellhop volume ...` and `cellhop secret ...`: volumes and secrets from a shell.

They work on this host's state directory (c.Cellhop.state_dir, or
jupyter_data_dir()/cellhop; `--state-dir` overrides), or on a cellhop server
when CELLHOP_CONTROL_URL (and CELLHOP_CONTROL_TOKEN) are set. Secret values
are never printed; a KEY given without '=' is asked for without echo.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path

from ..errors import CellhopError
from ..sizes import format_size


def _storage(args):
    from ..control_address import CONTROL_TOKEN_ENV, CONTROL_URL_ENV

    url = os.environ.get(CONTROL_URL_ENV)
    if url and not args.state_dir:
        from ..kernel.http_control_plane import HttpControlPlane

        return HttpControlPlane(url, os.environ.get(CONTROL_TOKEN_ENV, "")).storage()
    from ..kernel.storage_client import LocalStorageClient
    from .config import Cellhop
    from .container_storage import ContainerStorage

    cellhop = Cellhop(config=server_config())
    if args.state_dir:
        cellhop.state_dir = args.state_dir
    storage = ContainerStorage(cellhop)
    return LocalStorageClient(storage.volumes, storage.secrets)


# The config files a Jupyter server with cellhop reads, lowest priority first: the base Jupyter one,
# the server's, and the extension's own (CellhopApp's config_file_name).
CONFIG_FILES = ("jupyter_config", "jupyter_server_config", "jupyter_cellhop_config")


def server_config():
    """The traitlets Config of the Jupyter config files (.py and .json) on jupyter_config_path() (so
    JUPYTER_CONFIG_DIR and JUPYTER_CONFIG_PATH count), merged as the server merges them: the CLI and
    the server then agree on c.Cellhop.state_dir and the rest."""
    import logging

    from jupyter_core.paths import jupyter_config_path
    from traitlets.config import Application, Config

    log = logging.getLogger("cellhop")
    config = Config()
    paths = jupyter_config_path()
    for base in CONFIG_FILES:
        for loaded in Application._load_config_files(base, path=paths, log=log):
            config.merge(loaded[0] if isinstance(loaded, tuple) else loaded)  # (config, file name) in traitlets 5
    return config


def _volume(args):
    from ..kernel.volume import Volume

    return Volume(args.name, client=_storage(args))




def _print(args, data, text: str) -> None:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


# -- volume ----------------------------------------------------------------------
def _vol_create(args):
    info = _storage(args).volume_create(args.name, quota=args.quota)
    _print(args, info, f"volume {info['name']} (quota {format_size(info['quota'])})")


def _vol_list(args):
    vols = _storage(args).volume_list()
    lines = [f"{v['name']:<24} {format_size(v['usage']):>9} / {format_size(v['quota']):<9} "
             + (f"mounted by {', '.join(m['container'] for m in v['mounted_by'])}" if v["mounted_by"] else "")
             for v in vols]
    _print(args, vols, "\n".join(lines) if lines else "no volumes; make one with `cellhop volume create NAME`")


def _vol_ls(args):
    entries = _storage(args).volume_ls(args.name, args.path)
    lines = [f"{e['type']:<4} {format_size(e['size']) if e['type'] == 'file' else '-':>9}  "
             f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(e['modified']))}  "
             f"{e['path']}{'/' if e['type'] == 'dir' else ''}" for e in entries]
    _print(args, entries, "\n".join(lines) if lines else "(empty)")


def _vol_put(args):
    for entry in _volume(args).put(args.local, args.path):
        print(f"{entry['path']}  {format_size(entry['size'])}")


def _vol_get(args):
    print(_volume(args).get(args.path, args.local))


def _vol_rm(args):
    _storage(args).volume_rm(args.name, args.path, recursive=args.recursive)


def _vol_mv(args):
    print(_storage(args).volume_mv(args.name, args.src, args.dst)["path"])


def _vol_mkdir(args):
    print(_storage(args).volume_mkdir(args.name, args.path)["path"])


def _vol_usage(args):
    usage = _storage(args).volume_usage(args.name)
    _print(args, usage, f"{format_size(usage['bytes'])} in {usage['files']} file(s), quota {format_size(usage['quota'])}")


def _vol_delete(args):
    if not args.yes and sys.stdin.isatty():
        if input(f"delete volume {args.name} and all its files? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return
    _storage(args).volume_delete(args.name)
    print(f"deleted volume {args.name}")


# -- secret ----------------------------------------------------------------------
def _read_value(key: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"{key}: ")
    return sys.stdin.readline().rstrip("\n")


def _sec_create(args):
    from ..secret_values import parse_assignments, parse_dotenv

    values = parse_dotenv(Path(args.from_dotenv).read_text()) if args.from_dotenv else {}
    typed = [item if "=" in item else f"{item}={_read_value(item)}" for item in args.pairs]
    if typed:
        values.update(parse_assignments(typed))
    view = _storage(args).secret_create(args.name, values, replace=args.replace)
    print(f"secret {view['name']}: {', '.join(view['keys'])}")


def _sec_list(args):
    secrets = _storage(args).secret_list()
    lines = [f"{s['name']:<24} {', '.join(s['keys'])}" + ("  (session)" if s.get("session") else "")
             for s in secrets]
    _print(args, secrets, "\n".join(lines) if lines else "no secrets; make one with `cellhop secret create NAME KEY`")


def _sec_delete(args):
    _storage(args).secret_delete(args.name)
    print(f"deleted secret {args.name}")


def _run(func):
    def run(args) -> int:
        try:
            func(args)
        except (CellhopError, OSError) as exc:
            print(f"cellhop: {exc}", file=sys.stderr)
            return 1
        return 0

    return run


def add_commands(sub) -> None:
    """Add `volume` and `secret` to the `cellhop` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=None,
                        help="state directory to use (default: c.Cellhop.state_dir or jupyter_data_dir()/cellhop)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    vol = sub.add_parser("volume", help="persistent volumes: create, list, ls, put, get, rm, mv, usage, delete")
    vsub = vol.add_subparsers(dest="volume_command", required=True)

    def command(parent, name, func, help_text, parents=(common,), aliases=()):
        p = parent.add_parser(name, help=help_text, parents=list(parents), aliases=list(aliases))
        p.set_defaults(func=_run(func))
        return p

    p = command(vsub, "create", _vol_create, "make a volume (no-op when it exists)", (common, as_json))
    p.add_argument("name")
    p.add_argument("--quota", default=None, help="most it may hold through uploads, e.g. 50G")
    command(vsub, "list", _vol_list, "every volume with usage and who mounts it", (common, as_json))
    p = command(vsub, "ls", _vol_ls, "list a folder of a volume", (common, as_json))
    p.add_argument("name")
    p.add_argument("path", nargs="?", default="")
    p = command(vsub, "put", _vol_put, "upload a file or folder (each file lands whole or not at all)")
    p.add_argument("name")
    p.add_argument("local")
    p.add_argument("path", nargs="?", default=None, help="where in the volume (default: the local name)")
    p = command(vsub, "get", _vol_get, "download a file")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("local", nargs="?", default=None)
    p = command(vsub, "rm", _vol_rm, "delete a file or folder")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("-r", "--recursive", action="store_true", help="delete a folder that is not empty")
    p = command(vsub, "mv", _vol_mv, "rename inside a volume")
    p.add_argument("name")
    p.add_argument("src")
    p.add_argument("dst")
    p = command(vsub, "mkdir", _vol_mkdir, "make a folder (and its parents)")
    p.add_argument("name")
    p.add_argument("path")
    p = command(vsub, "usage", _vol_usage, "bytes and files held, and the quota", (common, as_json))
    p.add_argument("name")
    p = command(vsub, "delete", _vol_delete, "delete a volume and its files (refused while mounted)")
    p.add_argument("name")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    sec = sub.add_parser("secret", help="secrets: create, list, delete (values are never shown)")
    ssub = sec.add_subparsers(dest="secret_command", required=True)
    p = command(ssub, "create", _sec_create, "store a secret: KEY=VALUE pairs, KEY alone (asked for), "
                                            "or --from-dotenv FILE")
    p.add_argument("name")
    p.add_argument("pairs", nargs="*", metavar="KEY[=VALUE]")
    p.add_argument("--from-dotenv", default=None, metavar="FILE", help="read KEY=VALUE lines from a .env file")
    p.add_argument("--replace", action="store_true", help="replace a secret of that name")
    command(ssub, "list", _sec_list, "names and keys of every secret", (common, as_json), aliases=["ls"])
    p = command(ssub, "delete", _sec_delete, "delete a secret")
    p.add_argument("name")

"""`cellhop kernelspec install --gpu H100 [--name N] [--user|--sys-prefix|--prefix P]` (also `jupyter cellhop ...`):
a kernelspec whose kernel runs in a cellhop container (server_ext/kernelspecs.py writes it)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import CellhopError
from .kernelspecs import install_kernelspec, kernelspec_dict


def _cmd_install(args) -> int:
    try:
        where = install_kernelspec(args.gpu, name=args.name, user=args.user,
                                   prefix=sys.prefix if args.sys_prefix else args.prefix,
                                   display=args.display_name, image=args.image, cpus=args.cpus, memory=args.memory,
                                   launch_timeout=args.launch_timeout, volumes=args.volume, secrets=args.secret)
    except (CellhopError, ValueError) as exc:
        print(f"cellhop kernelspec install: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"cellhop kernelspec install: {exc}; use --user to install for this user only", file=sys.stderr)
        return 1
    name = Path(where).name
    print(f"Installed kernelspec {name} ({kernelspec_dict(args.gpu, display=args.display_name)['display_name']}) "
          f"in {where}")
    return 0


def add_commands(subparsers) -> None:
    """Add `kernelspec install` to the `cellhop` command (cli.py)."""
    p = subparsers.add_parser("kernelspec", help="install kernelspecs for whole kernels on GPU containers")
    sub = p.add_subparsers(dest="kernelspec_command", required=True)
    i = sub.add_parser("install", help="write a kernelspec whose kernel runs in a cellhop container")
    i.add_argument("--gpu", required=True, help="GPU request: H100, H100:2, 'H100,A100-80GB', any")
    i.add_argument("--name", help="kernelspec name (default: cellhop-<gpu>, e.g. cellhop-h100)")
    i.add_argument("--display-name", help="name in the launcher (default: 'Python 3 · <gpu>')")
    i.add_argument("--image", help="a built cellhop image (key or name); default: this Python environment")
    i.add_argument("--cpus", type=int, help="CPUs the kernel may use")
    i.add_argument("--memory", help="memory limit, e.g. 16G")
    i.add_argument("--launch-timeout", type=float, help="seconds to wait for a GPU and the kernel (default 300)")
    i.add_argument("--volume", action="append", default=[], metavar="NAME:/path[:ro]",
                   help="mount a volume in the kernel's container (repeatable)")
    i.add_argument("--secret", action="append", default=[], metavar="NAME",
                   help="inject a secret's variables into the kernel's environment (repeatable)")
    where = i.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for this user only")
    where.add_argument("--sys-prefix", action="store_true", help=f"install into this environment ({sys.prefix})")
    where.add_argument("--prefix", help="install under this prefix")
    i.set_defaults(func=_cmd_install)

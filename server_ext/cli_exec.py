"""`cellhop exec <id> -- cmd ...`, `cellhop shell <id>` and `cellhop logs [-f] <id>`: inside a container, from a shell.

They talk to a running cellhop server (the one CELLHOP_CONTROL_URL and CELLHOP_CONTROL_TOKEN name,
`--url`/`--token`, else the only Jupyter server running here: cli_endpoint._server). `exec` streams
the command's output to this terminal's stdout and stderr and exits with its exit code (124 when its
timeout killed it; 128+N when a signal N did); this process's stdin is the command's when it is not a
terminal. `shell` opens a terminal on the server (POST containers/{id}/terminal) and connects this one
to it (terminado's websocket protocol): raw mode, the window's size follows this one, Ctrl-D or `exit`
ends it, and it ends when the container stops. `logs -f` follows the log until the container ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from urllib.parse import quote, urlencode

from ..errors import CellhopError
from .cli_endpoint import _run, _server


def _stream(server, method: str, path: str, body: dict | None = None, query: dict | None = None):
    """The JSON lines of a streaming route, one by one (errors as the cellhop error the server named)."""
    import urllib.error
    import urllib.request

    from ..errors import error_from_answer

    target = server.base + "cellhop/api/" + path + (f"?{urlencode(query)}" if query else "")
    request = urllib.request.Request(target, method=method, headers={"Authorization": f"token {server.token}"},
                                     data=None if body is None else json.dumps(body).encode())
    try:
        answer = urllib.request.urlopen(request, timeout=None)
    except urllib.error.HTTPError as exc:
        raise error_from_answer(exc.code, exc.read(), None) from None
    except OSError as exc:
        raise CellhopError(f"cannot reach the cellhop server at {server.base} ({exc}); is it running?") from None
    with answer:
        for line in answer:
            if line.strip():
                yield json.loads(line)


def _exec(args) -> int:
    argv = list(args.argv)
    if "--" in argv:  # options between the id and `--` (argparse's remainder took them along)
        cut = argv.index("--")
        options = argparse.ArgumentParser(prog="cellhop exec", add_help=False)
        options.add_argument("--timeout", type=float)
        options.add_argument("--url")
        options.add_argument("--token")
        options.parse_args(argv[:cut], namespace=args)
        argv = argv[cut + 1:]
    if not argv:
        raise CellhopError("give the command after the container's id: cellhop exec <id> -- ls -l")
    body: dict = {"argv": argv}
    if args.timeout is not None:
        body["timeout"] = args.timeout
    if not sys.stdin.isatty():
        body["stdin"] = sys.stdin.read()
    last: dict = {}
    for line in _stream(_server(args), "POST", f"containers/{quote(args.id, safe='')}/exec", body):
        if "stream" in line:
            out = sys.stdout if line["stream"] == "stdout" else sys.stderr
            out.write(line["text"])
            out.flush()
        else:
            last = line
    if last.get("type") == "error":
        raise CellhopError(last.get("message", "the command could not be run"))
    if last.get("timed_out"):
        print(f"cellhop: {last.get('message')}", file=sys.stderr)
        return 124
    code = last.get("exit_code")
    if code is None:
        raise CellhopError("the server closed the stream before the command ended")
    return 128 - code if code < 0 else code


def _logs(args) -> int:
    server = _server(args)
    path = f"containers/{quote(args.id, safe='')}/logs"
    if not args.follow:
        query = {"tail": str(args.tail)} if args.tail else None
        sys.stdout.write(server.request("GET", path, query=query)["log"] + "\n")
        return 0
    try:
        for line in _stream(server, "GET", path, query={"follow": "1", "tail": str(args.tail or 100)}):
            if "log" in line:
                sys.stdout.write(line["log"])
                sys.stdout.flush()
            elif line.get("exited"):
                status = line.get("status") or {}
                print(f"cellhop: container {args.id} {status.get('description', 'exited')}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 0


def _shell(args) -> int:
    from .shell_client import run_shell

    server = _server(args)
    answer = server.request("POST", f"containers/{quote(args.id, safe='')}/terminal",
                            {"shell": args.command} if args.command else {})
    return run_shell(server.base, server.token, answer["name"])


def _connection_options(p) -> None:
    p.add_argument("--url", help="the cellhop server's URL (default: CELLHOP_CONTROL_URL, else the only Jupyter "
                                 "server running here)")
    p.add_argument("--token", help="its token (default: CELLHOP_CONTROL_TOKEN, else the running server's own)")


def add_commands(sub) -> None:
    p = sub.add_parser("exec", help="run a command inside a running container: cellhop exec <id> -- cmd args")
    p.add_argument("id", help="the container's id (GET cellhop/api/containers, the panel, %%gpu)")
    p.add_argument("--timeout", type=float, help="kill the command after this many seconds (default 300)")
    _connection_options(p)
    p.add_argument("argv", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    p.set_defaults(func=_run(_exec))
    p = sub.add_parser("shell", help="an interactive shell inside a running container")
    p.add_argument("id", help="the container's id")
    _connection_options(p)
    p.add_argument("command", nargs="*", help="the shell to run (default: /bin/bash)")
    p.set_defaults(func=_run(_shell))
    p = sub.add_parser("logs", help="a container's log; -f follows it as it grows")
    p.add_argument("id", help="the container's id")
    p.add_argument("-f", "--follow", action="store_true", help="follow the log until the container ends")
    p.add_argument("--tail", type=int, default=None, help="only the last N lines (with -f: default 100)")
    _connection_options(p)
    p.set_defaults(func=_run(_logs))


"""`cellhop run NOTEBOOK`, `cellhop runs list|show|logs|cancel`, `cellhop schedule NOTEBOOK`, `cellhop schedules
list|pause|resume|delete`: server-owned runs and schedules from a shell (the server as for `cellhop endpoint`:
CELLHOP_CONTROL_URL and CELLHOP_CONTROL_TOKEN, `--url`/`--token`, or the one Jupyter server running here).

    cellhop run train.ipynb --gpu H100 -p lr=0.01 -p epochs=3 --output trained.ipynb

executes the whole notebook in a GPU container (the parameters in a new cell after the one tagged
`parameters`, as papermill does) and saves it with its outputs; a cell that raises makes a failed run (exit
status 1) whose saved notebook shows the error under that cell.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import CellhopError
from .cli_endpoint import _run, _server

FINAL = ("succeeded", "failed", "cancelled", "lost")


def _not_found():
    from ..run_errors import RunNotFound

    return RunNotFound


def _post_bytes(server, path: str, request: dict, body: bytes) -> dict:
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode

    from ..errors import answer_json, error_from_answer

    target = server.base + "cellhop/api/" + path + "?" + urlencode({"spec": json.dumps(request)})
    http_request = urllib.request.Request(target, method="POST", data=body, headers={
        "Authorization": f"token {server.token}", "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(http_request, timeout=60) as answer:
            return answer_json(answer.read())
    except urllib.error.HTTPError as exc:
        raise error_from_answer(exc.code, exc.read(), _not_found()) from None
    except OSError as exc:
        raise CellhopError(f"cannot reach the cellhop server at {server.base} ({exc}); is it running?") from None


def _parameters(pairs: list[str]) -> dict:
    from .runs_notebook import parameter_value

    out = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip().isidentifier():
            raise CellhopError(f"-p {pair!r}: give name=value (a Python name, then its value)")
        out[name.strip()] = parameter_value(value)
    return out


def _notebook_request(args) -> tuple[dict, bytes]:
    path = Path(args.notebook)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CellhopError(f"cannot read the notebook {path} ({exc.strerror})") from None
    spec = {"gpu": args.gpu or "none", "timeout": args.timeout}
    return ({"exec": "notebook", "name": path.name, "spec": spec, "parameters": _parameters(args.parameter),
             "retries": args.retries or None}, data)


def _run_notebook(args) -> int:
    server = _server(args)
    request, data = _notebook_request(args)
    view = _post_bytes(server, "runs", request, data)
    print(f"run {view['id']}: {args.notebook} queued (GPU {view['gpu']})", file=sys.stderr)
    if args.detach:
        print(view["id"])
        return 0
    while view["status"] not in FINAL:
        view = server.request("GET", f"runs/{view['id']}/wait", query={"timeout": 30, "detail": 1},
                              not_found=_not_found())
    if "result" not in view:
        view = server.request("GET", f"runs/{view['id']}", not_found=_not_found())
    output = Path(args.output or Path(args.notebook).with_name(Path(args.notebook).stem + ".out.ipynb"))
    notebook = view.get("result") or view.get("partial")  # a failed run keeps the notebook as far as it ran
    if notebook is not None:
        output.write_text(json.dumps(notebook, indent=1) + "\n")
        print(f"saved the executed notebook to {output}", file=sys.stderr)
    duration = f"{view['duration']:.1f} s" if view.get("duration") is not None else "-"
    print(f"run {view['id']}: {view['status']} in {duration}, {len(view['attempts'])} attempt(s)"
          + (f": {view['error']}" if view.get("error") else ""), file=sys.stderr)
    return 0 if view["status"] == "succeeded" else 1


def _schedule_notebook(args) -> int:
    server = _server(args)
    request, data = _notebook_request(args)
    request.update(cron=args.cron, every=args.every)
    view = _post_bytes(server, "schedules", request, data)
    print(view["id"])
    return 0


def _list(args) -> int:
    runs = _server(args).request("GET", "runs", query={"status": args.status} if args.status else None)["runs"]
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print("no runs")
        return 0
    print(f"{'ID':<34} {'STATUS':<10} {'KIND':<9} {'NAME':<24} {'GPU':<8} {'TRIES':>5} {'SECONDS':>8}  STARTED")
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"])) if r.get("started") else "-"
        seconds = f"{r['duration']:.1f}" if r.get("duration") is not None else "-"
        gpus = ",".join(r.get("gpus") or []) or r.get("gpu") or "none"
        print(f"{r['id']:<34} {r['status']:<10} {r['kind']:<9} {r['name'][:24]:<24} {gpus[:8]:<8} "
              f"{len(r['attempts']):>5} {seconds:>8}  {started}")
    return 0


def _show(args) -> int:
    view = _server(args).request("GET", f"runs/{args.id}", not_found=_not_found())
    view.pop("logs", None)
    print(json.dumps(view, indent=2))
    return 0


def _logs(args) -> int:
    print(_server(args).request("GET", f"runs/{args.id}/logs", not_found=_not_found())["logs"].rstrip())
    return 0


def _cancel(args) -> int:
    view = _server(args).request("DELETE", f"runs/{args.id}", not_found=_not_found())
    print(f"run {view['id']}: {view['status']}" + (" (its container stops)" if view["status"] == "running" else ""))
    return 0


def _schedules_list(args) -> int:
    items = _server(args).request("GET", "schedules")["schedules"]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("no schedules")
        return 0
    print(f"{'ID':<34} {'NAME':<24} {'WHEN':<20} {'STATE':<7} {'FIRED':>5}  NEXT")
    for s in items:
        when = s["cron"] if s.get("cron") else f"every {s['every']:g}s"
        nxt = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["next"])) if s.get("next") else "-"
        print(f"{s['id']:<34} {s['name'][:24]:<24} {when:<20} {'paused' if s['paused'] else 'active':<7} "
              f"{s['fired']:>5}  {nxt}")
    return 0


def _schedule_verb(verb: str):
    def act(args) -> int:
        server = _server(args)
        if verb == "delete":
            view = server.request("DELETE", f"schedules/{args.id}", not_found=_not_found())
        else:
            view = server.request("PATCH", f"schedules/{args.id}", {"paused": verb == "pause"}, not_found=_not_found())
        print(f"schedule {view['id']} ({view['name']}): {'deleted' if verb == 'delete' else verb + 'd'}")
        return 0
    return act


def _where(q) -> None:
    q.add_argument("--url", help="the server's URL (default: CELLHOP_CONTROL_URL, or the one running here)")
    q.add_argument("--token", help="the server's token (default: CELLHOP_CONTROL_TOKEN)")


def _notebook_options(q) -> None:
    q.add_argument("notebook", help="the .ipynb file to execute")
    q.add_argument("--gpu", default=None, help="GPU request, e.g. H100, A100:2 (default: none)")
    q.add_argument("-p", "--parameter", action="append", metavar="NAME=VALUE",
                   help="a parameter (injected after the cell tagged 'parameters'); repeatable")
    q.add_argument("--retries", type=int, default=0, help="retry a failed run up to N times")
    q.add_argument("--timeout", type=float, default=None, help="seconds the whole notebook may run")
    _where(q)


def add_commands(sub) -> None:
    q = sub.add_parser("run", help="execute a notebook in a GPU container, as a run the server owns")
    _notebook_options(q)
    q.add_argument("--output", "-o", help="where to save the executed notebook (default: NAME.out.ipynb)")
    q.add_argument("--detach", action="store_true", help="queue it and print its run id (do not wait)")
    q.set_defaults(func=_run(_run_notebook))

    q = sub.add_parser("schedule", help="run a notebook on a schedule (each firing a run)")
    _notebook_options(q)
    when = q.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="five cron fields, server's local time, e.g. '0 3 * * *'")
    when.add_argument("--every", help="a duration: 90s, 15m, 2h, 1d")
    q.set_defaults(func=_run(_schedule_notebook))

    p = sub.add_parser("runs", help="runs the server owns: list, show, logs, cancel")
    verbs = p.add_subparsers(dest="verb", required=True)
    for verb, fn, helptext in (("list", _list, "list runs (newest first)"), ("show", _show, "a run's record"),
                               ("logs", _logs, "a run's logs"), ("cancel", _cancel, "cancel a run")):
        q = verbs.add_parser(verb, help=helptext)
        if verb == "list":
            q.add_argument("--status", choices=("queued", "running", *FINAL))
            q.add_argument("--json", action="store_true")
        else:
            q.add_argument("id")
        _where(q)
        q.set_defaults(func=_run(fn))

    p = sub.add_parser("schedules", help="schedules the server owns: list, pause, resume, delete")
    verbs = p.add_subparsers(dest="verb", required=True)
    q = verbs.add_parser("list", help="list schedules")
    q.add_argument("--json", action="store_true")
    _where(q)
    q.set_defaults(func=_run(_schedules_list))
    for verb in ("pause", "resume", "delete"):
        q = verbs.add_parser(verb, help=f"{verb} a schedule")
        q.add_argument("id")
        _where(q)
        q.set_defaults(func=_run(_schedule_verb(verb)))

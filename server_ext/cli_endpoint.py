"""`cellhop endpoint list|delete|logs|key`: the endpoints a cellhop server serves, from a shell.

Endpoints belong to a running server: the one CELLHOP_CONTROL_URL and CELLHOP_CONTROL_TOKEN name
(`--url` and `--token` override), else the only Jupyter server running on this host as this user
(its URL and token from the runtime folder, as `jupyter server list` finds them).
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import quote

from ..errors import CellhopError


class _Server:
    """The server's cellhop API, one JSON call at a time (errors as the cellhop error the server named)."""

    def __init__(self, url: str, token: str):
        self.base = url if url.endswith("/") else url + "/"
        self.token = token

    def request(self, method: str, path: str, body: dict | None = None, query: dict | None = None,
                not_found=None) -> dict:
        import urllib.error
        import urllib.request
        from urllib.parse import urlencode

        from ..errors import answer_json, error_from_answer

        target = self.base + "cellhop/api/" + path + (f"?{urlencode(query)}" if query else "")
        request = urllib.request.Request(target, method=method, headers={"Authorization": f"token {self.token}"},
                                         data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer_json(answer.read())
        except urllib.error.HTTPError as exc:
            raise error_from_answer(exc.code, exc.read(), not_found) from None
        except OSError as exc:
            raise CellhopError(f"cannot reach the cellhop server at {self.base} ({exc}); is it running?") from None


def _server(args) -> _Server:
    from ..control_address import CONTROL_TOKEN_ENV, CONTROL_URL_ENV

    url = args.url or os.environ.get(CONTROL_URL_ENV)
    token = args.token or os.environ.get(CONTROL_TOKEN_ENV, "")
    if not url:
        from jupyter_server.serverapp import list_running_servers

        servers = list(list_running_servers())
        if len(servers) != 1:
            found = ", ".join(s["url"] for s in servers) or "none"
            raise CellhopError(f"which cellhop server? {len(servers)} Jupyter servers run here ({found}); "
                               "pass --url URL --token TOKEN or set CELLHOP_CONTROL_URL and CELLHOP_CONTROL_TOKEN")
        url, token = servers[0]["url"], token or servers[0].get("token", "")
    return _Server(url, token)


def _endpoint_path(name: str, tail: str = "") -> str:
    return f"endpoints/{quote(name, safe='')}{tail}"


def _not_found():
    from ..endpoint_errors import EndpointNotFound

    return EndpointNotFound


def _list(args) -> int:
    server = _server(args)
    endpoints = server.request("GET", "endpoints")["endpoints"]
    if args.json:
        print(json.dumps(endpoints, indent=2))
        return 0
    if not endpoints:
        print("no endpoints deployed (deploy one from a notebook: f.deploy('name') on an @cellhop.endpoint function)")
        return 0
    base = server.base
    print(f"{'NAME':<20} {'VER':>3} {'CONT':>4} {'FLIGHT':>6} {'QUEUE':>5} {'REQS':>7} {'ERRS':>5} {'P50 ms':>7}  URL")
    for e in endpoints:
        p50 = "-" if e["p50_ms"] is None else f"{e['p50_ms']:.1f}"
        print(f"{e['name']:<20} {e['version']:>3} {len(e['containers']):>4} {e['in_flight']:>6} {e['queued']:>5} "
              f"{e['requests']:>7} {e['errors']:>5} {p50:>7}  {base}{e['path']}")
    return 0


def _delete(args) -> int:
    gone = _server(args).request("DELETE", _endpoint_path(args.name), not_found=_not_found())
    print(f"deleted endpoint {gone['name']} (version {gone['version']}); its containers stop")
    return 0


def _logs(args) -> int:
    answer = _server(args).request("GET", _endpoint_path(args.name, "/logs"), query={"tail": args.tail},
                                   not_found=_not_found())
    if not answer["logs"]:
        print(f"endpoint {args.name} has no containers now (they start at the next request)", file=sys.stderr)
    for container_id, log in answer["logs"].items():
        print(f"--- container {container_id} ---")
        print(log.rstrip())
    return 0


def _key(args) -> int:
    answer = _server(args).request("POST", _endpoint_path(args.name, "/keys"), {}, not_found=_not_found())
    print(answer["key"])
    print(f"a new key for endpoint {args.name}: send it as 'Authorization: Bearer <key>'. It calls this endpoint "
          "and nothing else; it is shown only now (the server keeps its hash).", file=sys.stderr)
    return 0


def _run(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except CellhopError as exc:
            print(f"cellhop: {exc}", file=sys.stderr)
            return 1
    return run


def add_commands(sub) -> None:
    p = sub.add_parser("endpoint", help="endpoints a cellhop server serves: list, delete, logs, key")
    verbs = p.add_subparsers(dest="verb", required=True)
    for verb, fn, helptext in (("list", _list, "list the deployed endpoints"),
                               ("delete", _delete, "delete an endpoint (its containers stop)"),
                               ("logs", _logs, "the logs of an endpoint's containers"),
                               ("key", _key, "make a key that calls this endpoint (and nothing else)")):
        q = verbs.add_parser(verb, help=helptext)
        if verb != "list":
            q.add_argument("name")
        if verb == "list":
            q.add_argument("--json", action="store_true")
        if verb == "logs":
            q.add_argument("--tail", type=int, default=200)
        q.add_argument("--url", help="the server's URL (default: CELLHOP_CONTROL_URL, or the one running here)")
        q.add_argument("--token", help="the server's token (default: CELLHOP_CONTROL_TOKEN)")
        q.set_defaults(func=_run(fn))

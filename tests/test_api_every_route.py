"""Authorization and XSRF on every route the extension mounts, not only one.

The routes are generated from the handlers the extension itself mounts (CellhopApp.initialize_handlers:
the REST API, the port proxy, the endpoints), every method each handler defines, every alternative of
a path group; a test checks that the running server's router holds exactly these (so a new route is
covered without editing this file). Against a real jupyter_server with the cellhop extension:

- authorization: with the server's own valid token, a server whose authorizer refuses the `cellhop`
  resource (jupyter_server's Authorizer, its documented extension point) answers 403 on every route;
- XSRF: logged in with the login cookie and no token, every state-changing request (POST, PUT, PATCH,
  DELETE) without the XSRF token is a 403 that says XSRF, and the same request with it gets past that.

Routes public by design (an endpoint call authenticated by the endpoint's own key) are named in PUBLIC
with why, and checked to refuse a caller without that key.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest
from jupyter_server.auth.authorizer import Authorizer

pytestmark = pytest.mark.timeout(180)
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
PUBLIC = {"EndpointCallHandler": "a deployed endpoint is called with its own key (endpoints/{name}/keys), "
                                 "not the Jupyter login",
          "EndpointSocketHandler": "the same endpoints, asked for a WebSocket (test_endpoint_websocket: its "
                                   "refusals)"}


def _paths(pattern: str) -> list[str]:
    """Example paths for a route pattern: each group of words gives each word, any other group "x"."""
    groups = list(re.finditer(r"\(\?P<\w+>([^()]*(?:\([^()]*\))?[^()]*)\)(\?)?", pattern))
    choices = []
    for g in groups:
        words = g.group(1).split("|") if re.fullmatch(r"[\w|]+", g.group(1)) else ["/x" if g.group(1).startswith("/")
                                                                                  else "x"]
        choices.append(words)
    paths = []
    for combo in itertools.product(*choices) if choices else [()]:
        path, last = "", 0
        for g, word in zip(groups, combo):
            path += pattern[last:g.start()] + word
            last = g.end()
        path += pattern[last:]
        paths.append(path.replace("/?", "/").rstrip("$").lstrip("^"))
    return paths


def _mounted() -> list[tuple[str, type]]:
    from cellhop.server_ext.app import CellhopApp

    app = CellhopApp()
    app.handlers = []
    app.initialize_handlers()
    return list(app.handlers) + list(app.upgrade_handlers)


def _methods(handler: type) -> list[str]:
    return [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
            if any(m.lower() in vars(base) for base in handler.__mro__ if base.__module__.startswith("cellhop"))]


def every_route() -> list[tuple[str, str, str]]:
    """(method, path under the base URL, handler name) for each mounted route."""
    routes = []
    for pattern, handler in _mounted():
        for path in _paths(pattern.lstrip("/")):
            routes += [(method, path, handler.__name__) for method in _methods(handler)]
    return sorted(set(routes))


EVERY_ROUTE = every_route()
GUARDED = [r for r in EVERY_ROUTE if r[2] not in PUBLIC]


class RefusesCellhop(Authorizer):
    """Allows everything but the `cellhop` resource (as a deployment restricting it would)."""

    def is_authorized(self, handler, user, action, resource):
        return resource != "cellhop"


def test_the_routes_are_every_route_the_server_mounts(jp_serverapp):
    mounted = {(rule.matcher.regex.pattern, rule.target) for rule in _rules(jp_serverapp.web_app.default_router)
               if getattr(rule.target, "__module__", "").startswith("cellhop.")}
    generated = {handler for _, handler in _mounted()}
    assert {target for _, target in mounted} == generated, (mounted, generated)
    kinds = {path.split("/")[1] if path.startswith("cellhop/") else path for _, path, _ in EVERY_ROUTE}
    assert {"api", "proxy", "endpoints"} <= kinds, kinds
    assert any(m in STATE_CHANGING for m, _, _ in GUARDED)


def _rules(router):
    for rule in router.rules:
        if hasattr(rule.target, "rules"):
            yield from _rules(rule.target)
        else:
            yield rule


async def _call(jp_fetch, method, path, headers):
    body = "{}" if method in ("POST", "PUT", "PATCH") else None
    r = await jp_fetch(*path.split("/"), method=method, body=body, headers=headers, raise_error=False,
                       follow_redirects=False)
    try:
        reply = json.loads(r.body) if r.body else {}
    except ValueError:
        reply = {"message": r.body.decode(errors="replace")[:300]}
    return r.code, reply


class TestAuthorization:
    @pytest.fixture
    def jp_server_config(self, runtime_root):
        return {"ServerApp": {"jpserver_extensions": {"cellhop": True}, "authorizer_class": RefusesCellhop},
                "Cellhop": {"simulated_gpus": "H100:1", "runtime_root": str(runtime_root), "idle_timeout": 0}}

    async def test_a_refused_resource_is_refused_on_every_route(self, jp_fetch, jp_serverapp):
        token = {"Authorization": f"token {jp_serverapp.identity_provider.token}"}
        answered = {}
        for method, path, handler in GUARDED:
            answered[(method, path)] = await _call(jp_fetch, method, path, token)
        wrong = {k: v for k, v in answered.items() if v[0] != 403}
        assert not wrong, wrong
        status, _ = await _call(jp_fetch, "GET", "api/status", token)
        assert status == 200  # the same token on a resource the authorizer allows


async def _login_cookie(jp_fetch, jp_serverapp) -> tuple[dict, str]:
    token = jp_serverapp.identity_provider.token
    cookies = []
    for params in ({"token": token}, {}):  # log in with the token, then load the login form (sets _xsrf)
        r = await jp_fetch("login", params=params, headers={"Authorization": ""}, follow_redirects=False,
                           raise_error=False)
        cookies += [c.split(";")[0] for c in r.headers.get_list("Set-Cookie")]
    xsrf = next(c.split("=", 1)[1] for c in cookies if c.startswith("_xsrf="))
    return {"Authorization": "", "Cookie": "; ".join(cookies)}, xsrf


async def test_every_state_changing_route_needs_the_xsrf_token_with_the_login_cookie(jp_fetch, jp_serverapp):
    cookie, xsrf = await _login_cookie(jp_fetch, jp_serverapp)
    status, _ = await _call(jp_fetch, "GET", "cellhop/api/gpus", cookie)
    assert status == 200  # the cookie logs in
    without, with_token = {}, {}
    for method, path, handler in GUARDED:
        if method not in STATE_CHANGING:
            continue
        status, reply = await _call(jp_fetch, method, path, cookie)
        if status != 403 or "XSRF" not in reply.get("message", "").upper() and "cross-site" not in \
                reply.get("message", ""):
            without[(method, path)] = (status, reply)
        status, reply = await _call(jp_fetch, method, path, {**cookie, "X-XSRFToken": xsrf})
        if status == 403 and ("XSRF" in reply.get("message", "").upper() or "cross-site" in reply.get("message", "")):
            with_token[(method, path)] = (status, reply)
    assert not without, without  # refused, and saying why
    assert not with_token, with_token  # the token is what it lacked


@pytest.mark.parametrize("method,path,handler", [r for r in EVERY_ROUTE if r[2] in PUBLIC])
async def test_a_public_route_refuses_a_caller_without_its_key(jp_fetch, method, path, handler):
    status, reply = await _call(jp_fetch, method, path, {"Authorization": ""})
    assert status in (401, 403, 404), (PUBLIC[handler], status, reply)

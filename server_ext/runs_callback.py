"""`callback_url`: when a run ends, the server POSTs the run's JSON (as GET runs/{id} answers it) there.

Only http(s) URLs are taken (runs.check_callback), redirects are not followed, the request times out
after c.Cellhop.run_callback_timeout seconds and is made once; how it went is kept in the run's
`callback` field. The server makes this request from its own host: whoever may submit runs can make it
POST to any address that host reaches (docs/api.md, "Callbacks and SSRF").
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("cellhop")


async def post_callback(url: str, view: dict, timeout: float) -> dict:
    """POST `view` to `url`; {"status": HTTP status} or {"error": why}."""
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

    request = HTTPRequest(url, method="POST", body=json.dumps(view, default=str),
                          headers={"Content-Type": "application/json", "User-Agent": "cellhop-runs"},
                          follow_redirects=False, request_timeout=timeout, connect_timeout=timeout)
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except HTTPClientError as exc:  # pragma: no cover - raise_error=False answers instead
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - an unreachable host, a refused connection, a timeout
        log.warning("cellhop: the callback of run %s to %s failed: %s", view.get("id"), url, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
    if response.code >= 400 or response.code == 599:
        return {"status": response.code, "error": str(response.error or response.reason)}
    return {"status": response.code}

"""REST: `usage`, this server's user's GPU-hours and their cost, today and this month (usage_view.py)."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..usage_view import usage_view
from .base import CellhopAPIHandler, in_thread


class UsageHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.write_json(await in_thread(usage_view, self.control_plane))


handlers = [
    (r"usage", UsageHandler),
]

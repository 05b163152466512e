"""REST: the job queue (server_ext/runs.py).

- `GET runs` (`?status=`): the runs (a kernel's token: the runs that kernel made);
- `POST runs`: a JSON body `{"function": "<deployed name>", "kwargs": {...}, "retries": n | {...},
  "callback_url": "https://..."}` queues a run of a function deployed with `f.deploy(name)`, or
  `{"notebook": {...}, "parameters": {...}, "gpu": "H100"}` a notebook; the notebook client sends its
  pickled function and arguments as an application/octet-stream body with `?spec=<JSON>` (opaque to
  the server: only a container unpickles them);
- `GET runs/{id}`: status, attempts, result (as JSON, when JSON-able), logs;
- `GET runs/{id}/wait?timeout=s`: the same, once the run ended or after `timeout` seconds;
- `GET runs/{id}/result`: the result's pickled bytes (the notebook client's `Run.result()`);
- `GET runs/{id}/logs`: `{"logs": text}`, live while it runs;
- `DELETE runs/{id}`: cancel it (its container is stopped);
- `GET schedules`, `POST schedules` (as `POST runs`, with `"cron"` or `"every"`), `GET schedules/{id}` (with
  its latest runs), `PATCH schedules/{id}` `{"paused": true|false}`, `DELETE schedules/{id}`.
"""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import CellhopError
from ...run_errors import RunNotDone, RunNotFound
from ..kernel_tokens import USER
from ..runs_store import check_id
from ..schedules import check_schedule_id
from .base import CellhopAPIHandler, parse_json

RUNS_SETTING = "cellhop_runs"
SCHEDULES_SETTING = "cellhop_schedules"
MAX_BODY_BYTES = 64 << 20
_ID = r"(?P<run_id>[^/]+)"
SPEC_FIELDS = ("gpu", "cpus", "memory", "image", "timeout", "volumes", "secrets")


def check_spec(spec, inventory) -> dict:
    """A run's container request as stored: the fields a ContainerSpec takes, checked now."""
    from ...container import ContainerSpec
    from ...gpu_request import GpuRequest, feasible_choices

    if not isinstance(spec, dict) or set(spec) - set(SPEC_FIELDS):
        raise CellhopError(f"a run's spec is a JSON object with the fields {', '.join(SPEC_FIELDS)}")
    out = {name: spec.get(name) for name in SPEC_FIELDS}
    out["gpu"] = str(out["gpu"] or "none")
    request = GpuRequest.parse(out["gpu"])
    if not request.cpu_only:
        feasible_choices(request, inventory)  # GpuRequestError when this host can never give it
    timeout = out["timeout"]
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise CellhopError(f"timeout={timeout!r}: give seconds above 0, or null")
    checked = ContainerSpec(gpu=out["gpu"], cpus=out["cpus"], memory=out["memory"], volumes=out["volumes"] or [],
                            secrets=out["secrets"] or [])
    out["volumes"] = [dict(m) for m in checked.volumes]
    out["memory"] = checked.memory
    return out


class _RunsAPI(CellhopAPIHandler):
    @property
    def runs(self):
        runs = self.settings[RUNS_SETTING]
        runs.started()
        return runs

    def run_record(self, run_id: str) -> dict:
        return self.runs.record(check_id(run_id))

    def prepared(self, body: bytes, extra: tuple = ()) -> dict:
        """What runs.submit (or schedules.create) takes, from the request: a JSON body or bytes with ?spec=."""
        if len(body) > MAX_BODY_BYTES:
            raise web.HTTPError(413, f"the run is {len(body)} bytes; a run takes at most {MAX_BODY_BYTES >> 20} MiB: "
                                     "load large data in the function from a volume")
        if self.request.headers.get("Content-Type", "").startswith("application/octet-stream"):
            request = parse_json(self.get_argument("spec", "{}"), "the spec parameter")
            if not isinstance(request, dict):
                raise CellhopError("the spec parameter must be a JSON object")
            prepared = self._submit_pickled({k: v for k, v in request.items() if k not in extra}, body)
        else:
            request = self.json_body()
            prepared = self._submit_json({k: v for k, v in request.items() if k not in extra})
        return {**prepared, **{k: request[k] for k in extra if k in request}}

    def _common(self, request: dict) -> dict:
        return {"retries": request.get("retries"), "callback_url": request.get("callback_url"),
                "caller": self.caller}

    def _function(self, name) -> tuple[dict, bytes]:
        endpoints = self.settings.get("cellhop_endpoints")
        if endpoints is None:
            raise RunNotFound("this server has no deployed functions")
        record = endpoints.record(name)
        code = endpoints.store.code(record["name"], record["version"])
        spec = {k: record["spec"].get(k) for k in ("gpu", "cpus", "memory", "image", "timeout")}
        return {**spec, "gpu": spec["gpu"] or "none"}, code, record["name"]

    def _submit_json(self, body: dict) -> dict:
        known = {"function", "kwargs", "retries", "callback_url", "notebook", "parameters", "gpu", "name", "timeout"}
        unknown = set(body) - known
        if unknown:
            raise CellhopError(f"unknown field(s) in the run: {', '.join(sorted(unknown))}; known: "
                               f"{', '.join(sorted(known))}")
        if "notebook" in body:
            from ..runs_notebook import notebook_input

            code = notebook_input(body["notebook"], body.get("parameters") or {})
            spec = check_spec({"gpu": body.get("gpu"), "timeout": body.get("timeout")}, self.control_plane.inventory)
            return dict(exec="notebook", name=str(body.get("name") or "notebook"), code=code, args=b"",
                                    spec=spec, **self._common(body))
        if not isinstance(body.get("function"), str):
            raise CellhopError('give "function": the name of a function deployed with f.deploy(name) '
                               '(or "notebook": a notebook\'s JSON)')
        kwargs = body.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise CellhopError('"kwargs" must be a JSON object: the function\'s keyword arguments')
        spec, code, name = self._function(body["function"])
        return dict(exec="json", name=name, function=name, code=code, args=json.dumps(kwargs).encode(),
                                spec=spec, **self._common(body))

    def _submit_pickled(self, request: dict, body: bytes) -> dict:
        if not isinstance(request, dict):
            raise CellhopError("the spec parameter must be a JSON object")
        exec_ = request.get("exec")
        if exec_ == "notebook":  # the body is the notebook's JSON
            from ..runs_notebook import notebook_input

            code = notebook_input(body, request.get("parameters") or {})
            spec = check_spec(request.get("spec") or {}, self.control_plane.inventory)
            return dict(exec="notebook", name=str(request.get("name") or "notebook"), code=code,
                                    args=b"", spec=spec, **self._common(request))
        if exec_ not in ("call", "cell"):
            raise CellhopError('a run sent as bytes has "exec": "call", "cell" or "notebook"')
        if request.get("function") is not None:  # a deployed function; the body holds the arguments only
            spec, code, name = self._function(request["function"])
            if request.get("spec"):
                raise CellhopError("a deployed function runs with the spec it was deployed with; give no spec")
            return dict(exec="call", name=name, function=name, code=code, args=body, spec=spec,
                                    **self._common(request))
        code_bytes = request.get("code_bytes")
        if not isinstance(code_bytes, int) or isinstance(code_bytes, bool) or not 0 < code_bytes <= len(body):
            raise CellhopError('"code_bytes" must say how many of the body\'s bytes are the code')
        spec = check_spec(request.get("spec") or {}, self.control_plane.inventory)
        if request.get("image"):
            spec["image"] = str(request["image"])
        return dict(exec=exec_, name=str(request.get("name") or exec_), code=body[:code_bytes],
                                args=body[code_bytes:], spec=spec, **self._common(request))


class RunsHandler(_RunsAPI):
    @web.authenticated
    @authorized
    async def get(self):
        status = self.get_argument("status", None)
        self.write_json({"runs": self.runs.list_view(self.caller, status)})

    @web.authenticated
    @authorized
    async def post(self):
        record = self.runs.submit(**self.prepared(self.request.body or b""))
        self.write_json(self.runs.view(record), status=201)


class RunHandler(_RunsAPI):
    @web.authenticated
    @authorized
    async def get(self, run_id):
        self.write_json(self.runs.view(self.run_record(run_id), detail=True))

    @web.authenticated
    @authorized
    async def delete(self, run_id):
        self.run_record(run_id)
        self.write_json(self.runs.view(self.runs.cancel(run_id)))


class RunWaitHandler(_RunsAPI):
    @web.authenticated
    @authorized
    async def get(self, run_id):
        self.run_record(run_id)
        timeout = self.get_argument("timeout", "30")
        try:
            seconds = float(timeout)
            assert 0 <= seconds <= 300
        except (ValueError, AssertionError):
            raise web.HTTPError(400, "timeout must be seconds from 0 to 300") from None
        record = await self.runs.wait(run_id, seconds)
        self.write_json(self.runs.view(record, detail=self.get_argument("detail", "0") == "1"))


class RunResultHandler(_RunsAPI):
    @web.authenticated
    @authorized
    async def get(self, run_id):
        record = self.run_record(run_id)
        if record["status"] in ("queued", "running"):
            raise RunNotDone(f"run {run_id} is {record['status']}; wait for it (Run.wait(), GET runs/{run_id}/wait)")
        data = self.runs.store.result(run_id)
        if data is None:
            raise RunNotFound(f"run {run_id} ({record['status']}) kept no result"
                              + (f": {record['result_note']}" if record.get("result_note") else
                                 f": {record['error']}" if record.get("error") else ""))
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("X-Cellhop-Run-Status", record["status"])
        self.finish(data)


class RunLogsHandler(_RunsAPI):
    @web.authenticated
    @authorized
    async def get(self, run_id):
        self.run_record(run_id)
        self.write_json({"id": run_id, "logs": self.runs.logs(run_id)})


class _SchedulesAPI(_RunsAPI):
    @property
    def schedules(self):
        schedules = self.settings[SCHEDULES_SETTING]
        schedules.started()
        return schedules


class SchedulesHandler(_SchedulesAPI):
    @web.authenticated
    @authorized
    async def get(self):
        self.write_json({"schedules": self.schedules.list_view(self.caller)})

    @web.authenticated
    @authorized
    async def post(self):
        """As POST runs, with "cron": "m h dom mon dow" or "every": "15m" (and "name")."""
        prepared = self.prepared(self.request.body or b"", extra=("cron", "every"))
        record = self.schedules.create(**prepared)
        self.write_json(self.schedules.view(record), status=201)


class ScheduleHandler(_SchedulesAPI):
    @web.authenticated
    @authorized
    async def get(self, schedule_id):
        record = self.schedules.load(check_schedule_id(schedule_id))
        view = self.schedules.view(record)
        view["runs"] = [r for r in self.runs.list_view(USER, limit=10_000) if r.get("schedule") == record["id"]][:50]
        self.write_json(view)

    @web.authenticated
    @authorized
    async def patch(self, schedule_id):
        """`{"paused": true}` pauses it, `{"paused": false}` resumes it."""
        body = self.json_body()
        if set(body) != {"paused"} or not isinstance(body["paused"], bool):
            raise web.HTTPError(400, 'send {"paused": true} to pause the schedule or {"paused": false} to resume it')
        record = self.schedules.set_paused(check_schedule_id(schedule_id), body["paused"])
        self.write_json(self.schedules.view(record))

    @web.authenticated
    @authorized
    async def delete(self, schedule_id):
        record = self.schedules.delete(check_schedule_id(schedule_id))
        self.write_json(self.schedules.view(record))


handlers = [
    (r"schedules", SchedulesHandler),
    (r"schedules/(?P<schedule_id>[^/]+)", ScheduleHandler),
    (r"runs", RunsHandler),
    (rf"runs/{_ID}", RunHandler),
    (rf"runs/{_ID}/wait", RunWaitHandler),
    (rf"runs/{_ID}/result", RunResultHandler),
    (rf"runs/{_ID}/logs", RunLogsHandler),
]

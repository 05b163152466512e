"""Runs the server owns, from a notebook: they outlive the kernel that started them.

    h = train.spawn(0.1, detach=True)      # a cellhop.Run: h.id, h.status, h.gpu, h.started, h.duration
    run = cellhop.Run(h.id)                # in any later kernel of the same server
    run.wait(); run.result(); run.logs(); run.cancel()
    cellhop.runs()                         # this kernel's runs (the server's user: all of them)
    cellhop.Function.lookup("embed").remote(x)    # a function deployed with f.deploy("embed")
    cellhop.Retries(max_retries=3, backoff=2.0, initial_delay=1.0)

Results come back pickled (cloudpickle): the run's owner reads what its own function returned.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from urllib.parse import quote, urlencode

from ..run_errors import NEED_SERVER, RunFailed, RunNotDone, RunNotFound, RunsNeedServer

FINAL = ("succeeded", "failed", "cancelled", "lost")


@dataclass(frozen=True)
class Retries:
    """How a failed call or a dead container is retried: the n-th retry waits initial_delay * backoff**(n-1) s."""

    max_retries: int = 3
    backoff: float = 2.0
    initial_delay: float = 1.0

    def __post_init__(self):
        if not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool) or \
                not 0 <= self.max_retries <= 100:
            raise ValueError(f"max_retries={self.max_retries!r}: give a whole number from 0 to 100")
        if not 1.0 <= float(self.backoff) <= 10.0:
            raise ValueError(f"backoff={self.backoff!r}: give a factor from 1 to 10")
        if not 0.0 <= float(self.initial_delay) <= 3600.0:
            raise ValueError(f"initial_delay={self.initial_delay!r}: give seconds from 0 to 3600")

    @classmethod
    def of(cls, retries) -> Retries | None:
        """None, a number of retries, a dict or a Retries."""
        if retries is None or isinstance(retries, cls):
            return retries
        if isinstance(retries, int) and not isinstance(retries, bool):
            return cls(max_retries=retries) if retries else None
        if isinstance(retries, dict):
            return cls(**retries)
        raise TypeError(f"retries={retries!r}: give a number of retries or cellhop.Retries(...)")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt `attempt` (1, 2, ...) failed."""
        return min(self.initial_delay * self.backoff ** (attempt - 1), 3600.0)

    def to_json(self) -> dict:
        return asdict(self)


# -- the server's API, from this kernel ------------------------------------------------------
def _control(control=None):
    from .control_client import get_control_plane

    control = control or get_control_plane()
    if getattr(control, "request", None) is None or getattr(control, "base_path", None) is None:
        raise RunsNeedServer(NEED_SERVER)
    return control


def _raw(control, method: str, path: str, query: dict | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    """An API call that sends or receives bytes (a pickled function, a pickled result)."""
    from .http_control_plane import ControlPlaneUnreachable

    conn = control._new_connection(control.timeout)
    headers = control._headers(False)
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    target = control.base_path + path + (f"?{urlencode(query)}" if query else "")
    try:
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    except OSError as exc:
        raise ControlPlaneUnreachable(f"cannot reach the cellhop server ({exc}); is it running?") from None
    finally:
        conn.close()


def _check(status: int, data: bytes):
    from ..errors import answer_json, error_from_answer

    if status >= 400:
        raise error_from_answer(status, answer_json(data), RunNotFound)
    return data


def submit(request: dict, body: bytes, control=None) -> Run:
    """Queue a run on the server: `request` says what (exec, spec, retries, ...), `body` holds its bytes."""
    control = _control(control)
    data = _check(*_raw(control, "POST", "runs", {"spec": json.dumps(request)}, body))
    view = json.loads(data)
    return Run(view["id"], control=control, view=view)


def submit_call(fn, args: tuple, kwargs: dict, spec: dict, name: str, retries=None, control=None) -> Run:
    """A detached call of `fn(*args, **kwargs)` in a container the server starts."""
    import cloudpickle

    code = cloudpickle.dumps(fn)
    retries = Retries.of(retries)
    return submit({"exec": "call", "name": name, "code_bytes": len(code), "spec": spec,
                   "retries": retries.to_json() if retries else None}, code + cloudpickle.dumps((args, kwargs)),
                  control)


def submit_cell(source: str, values: dict, spec: dict, name: str, retries=None, control=None) -> Run:
    """A detached cell: its source, with `values` (the names it reads) defined; its result is what it assigns."""
    import cloudpickle

    code = source.encode()
    retries = Retries.of(retries)
    return submit({"exec": "cell", "name": name, "code_bytes": len(code), "spec": spec,
                   "retries": retries.to_json() if retries else None}, code + cloudpickle.dumps(values), control)


def spec_of(run_spec, image_key: str | None = None) -> dict:
    """The server's run spec from a RunSpec (kernel/run_spec.py)."""
    return {"gpu": str(run_spec.gpu) if not run_spec.gpu.cpu_only else "none", "cpus": run_spec.cpus,
            "memory": run_spec.memory, "timeout": run_spec.timeout, "image": image_key,
            "volumes": [m._asdict() for m in run_spec.volumes], "secrets": list(run_spec.secrets)}


class Run:
    """A run the server owns: `cellhop.Run(id)` picks one up in any kernel of the same server."""

    def __init__(self, run_id: str, control=None, view: dict | None = None):
        self.id = run_id
        self._control = _control(control)
        self._view = view

    # -- state --------------------------------------------------------------------------
    def refresh(self) -> dict:
        self._view = self._control.request("GET", f"runs/{quote(self.id)}", not_found=RunNotFound)
        return self._view

    @property
    def view(self) -> dict:
        return self._view if self._view is not None else self.refresh()

    @property
    def status(self) -> str:
        if self._view is None or self._view["status"] not in FINAL:
            self.refresh()
        return self._view["status"]

    gpu = property(lambda self: self.view.get("gpu"))
    gpus = property(lambda self: self.view.get("gpus"))
    started = property(lambda self: self.view.get("started"))
    duration = property(lambda self: self.view.get("duration"))
    attempts = property(lambda self: self.view.get("attempts", []))
    error = property(lambda self: self.view.get("error"))
    name = property(lambda self: self.view.get("name"))

    def done(self) -> bool:
        return self.status in FINAL

    def logs(self) -> str:
        """The logs of its containers so far (attempt after attempt; live while it runs)."""
        return self._control.request("GET", f"runs/{quote(self.id)}/logs", not_found=RunNotFound)["logs"]

    def wait(self, timeout: float | None = None) -> Run:
        """Until it ended (or `timeout` seconds passed: then TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 60.0 if deadline is None else max(0.0, min(60.0, deadline - time.monotonic()))
            self._view = self._control.request("GET", f"runs/{quote(self.id)}/wait",
                                               query={"timeout": f"{left:.3f}"}, not_found=RunNotFound)
            if self._view["status"] in FINAL:
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.id} is still {self._view['status']} after {timeout:g} s")

    def result(self, timeout: float | None = None):
        """Its return value (for a cell: the dict of the variables it assigned), once it ended; a failed run
        raises its exception (with the container's traceback in the run's logs)."""
        import cloudpickle

        self.wait(timeout)
        status = self._view["status"]
        if status in ("cancelled", "lost"):
            raise RunFailed(f"run {self.id} was {status}: {self._view.get('error') or ''}".rstrip(": "))
        code, data = _raw(self._control, "GET", f"runs/{quote(self.id)}/result")
        if status == "failed":
            if code < 400:
                exc = cloudpickle.loads(data)
                if isinstance(exc, BaseException):
                    if hasattr(exc, "add_note"):
                        exc.add_note(f"--- run {self.id} failed; its logs: cellhop.Run({self.id!r}).logs()")
                    raise exc
            raise RunFailed(f"run {self.id} failed: {self._view.get('error')}")
        if code == 409:
            raise RunNotDone(f"run {self.id} has not ended")
        return cloudpickle.loads(_check(code, data))

    def cancel(self) -> Run:
        self._view = self._control.request("DELETE", f"runs/{quote(self.id)}", not_found=RunNotFound)
        return self

    # -- display ------------------------------------------------------------------------
    def _summary(self) -> str:
        v = self.view
        duration = f"{v['duration']:.1f} s" if v.get("duration") is not None else "-"
        gpus = ", ".join(v.get("gpus") or []) or v.get("gpu") or "none"
        return (f"run {self.id} ({v.get('kind')} {v.get('name')}): {v['status']}, GPU {gpus}, "
                f"{len(v.get('attempts') or [])} attempt(s), {duration}")

    def __repr__(self) -> str:
        return f"<cellhop.Run {self._summary()}>"

    def _repr_html_(self) -> str:
        import html

        return f"<code>cellhop.Run({self.id!r})</code>: {html.escape(self._summary().partition(': ')[2])}"


def runs(status: str | None = None, control=None) -> list[Run]:
    """The runs this kernel made (newest first); with the server's token, every run."""
    control = _control(control)
    answer = control.request("GET", "runs", query={"status": status} if status else None)
    return [Run(v["id"], control=control, view=v) for v in answer["runs"]]


class Function:
    """A function deployed by name (`f.deploy("embed")`), called from any notebook of the same server."""

    def __init__(self, name: str, control=None):
        self.name = name
        self._control = _control(control)

    @classmethod
    def lookup(cls, name: str, control=None) -> Function:
        """The deployed function `name`; EndpointNotFound (404) when none is deployed under it."""
        from ..endpoint_errors import EndpointNotFound

        control = _control(control)
        control.request("GET", f"endpoints/{quote(name, safe='')}", not_found=EndpointNotFound)
        return cls(name, control)

    def spawn(self, *args, retries=None, callback_url: str | None = None, **kwargs) -> Run:
        """Queue a run of it (the server's container, its deployed spec); a Run at once."""
        import cloudpickle

        retries = Retries.of(retries)
        return submit({"exec": "call", "function": self.name, "retries": retries.to_json() if retries else None,
                       "callback_url": callback_url}, cloudpickle.dumps((args, kwargs)), self._control)

    def remote(self, *args, **kwargs):
        """Run it once and return its result (raising its exception)."""
        return self.spawn(*args, **kwargs).result()

    def __repr__(self) -> str:
        return f"<cellhop.Function {self.name}>"


def detach_cell(cells, code: str, d, retries=None) -> Run:
    """`%%remote --detach`: the cell as a run the server owns; its result is the dict of what it assigned.
    The notebook's values it reads go with it (those that pickle), as they are now."""
    import cloudpickle

    from .cell_names import is_user_name, names_read, parse, running_cell_number

    d = cells.prepare_image(d, code)
    namespace = cells.shell.user_ns
    values, left = {}, []
    for name in sorted(names_read(parse(code))):
        if is_user_name(name) and name in namespace:
            try:
                cloudpickle.dumps(namespace[name])
            except Exception:  # noqa: BLE001 - said below; the cell may not need it
                left.append(name)
                continue
            values[name] = namespace[name]
    if left:
        print(f"cellhop: {', '.join(left)} could not be pickled and stay(s) here; the detached cell runs without")
    name = f"cell [{running_cell_number(cells.shell) or '?'}]"
    return submit_cell(code, values, spec_of(d, d.image_key), name, retries, control=cells.control)


def run_with_retries(retries, attempt):
    """`attempt()` until it returns, retrying what it raises (not an interrupt) with the policy's backoff."""
    policy = Retries.of(retries)
    tries = 0
    while True:
        tries += 1
        try:
            return attempt()
        except Exception as exc:  # noqa: BLE001 - retried, then raised
            if policy is None or tries > policy.max_retries:
                raise
            delay = policy.delay(tries)
            print(f"cellhop: attempt {tries} failed ({type(exc).__name__}: {exc}); retrying in {delay:g} s")
            time.sleep(delay)


# -- schedules ---------------------------------------------------------------------------------
class Schedule:
    """A schedule the server owns; each firing is a Run."""

    def __init__(self, schedule_id: str, control=None, view: dict | None = None):
        self.id = schedule_id
        self._control = _control(control)
        self._view = view

    def refresh(self) -> dict:
        self._view = self._control.request("GET", f"schedules/{quote(self.id)}", not_found=RunNotFound)
        return self._view

    @property
    def view(self) -> dict:
        return self._view if self._view is not None else self.refresh()

    def runs(self) -> list[Run]:
        """Its firings' runs, newest first."""
        return [Run(v["id"], control=self._control, view=v) for v in self.refresh().get("runs", [])]

    def _patch(self, paused: bool) -> Schedule:
        self._view = self._control.request("PATCH", f"schedules/{quote(self.id)}", {"paused": paused},
                                           not_found=RunNotFound)
        return self

    def pause(self) -> Schedule:
        return self._patch(True)

    def resume(self) -> Schedule:
        return self._patch(False)

    def delete(self) -> None:
        self._control.request("DELETE", f"schedules/{quote(self.id)}", not_found=RunNotFound)

    def __repr__(self) -> str:
        v = self.view
        when = f"cron {v['cron']!r}" if v.get("cron") else f"every {v.get('every'):g} s"
        return f"<cellhop.Schedule {self.id} {v.get('name')}: {when}{', paused' if v.get('paused') else ''}, " \
               f"fired {v.get('fired')} time(s)>"


def schedule(fn, *, cron: str | None = None, every=None, args: tuple = (), kwargs: dict | None = None,
             retries=None, name: str | None = None, callback_url: str | None = None, control=None) -> Schedule:
    """`cellhop.schedule(f, cron="0 3 * * *")` or `every="15m"`: the server runs `f(*args, **kwargs)` then, each
    firing a run (`f`: a cellhop.remote function, with its GPU and volumes; a cellhop.Function by name; or a
    plain function, CPU only). Cron fields are in the server's local time."""
    import cloudpickle

    if (cron is None) == (every is None):
        raise ValueError('give cron="m h dom mon dow" or every="15m" (one of them)')
    control = _control(control if control is not None else getattr(fn, "_control", None))
    policy = Retries.of(retries if retries is not None else getattr(fn, "retries", None))
    request = {"cron": cron, "every": every, "retries": policy.to_json() if policy else None,
               "callback_url": callback_url, "exec": "call"}
    arguments = cloudpickle.dumps((tuple(args), dict(kwargs or {})))
    if isinstance(fn, Function):
        request.update(function=fn.name, name=name or fn.name)
        body = arguments
    else:
        if callable(getattr(fn, "_where", None)) and hasattr(fn, "spec"):  # a cellhop.remote function
            pool, _, run_spec = fn._where({"fn": fn.fn, "args": args, "kwargs": kwargs or {}})
            spec, target = spec_of(run_spec, fn._image_info and fn._image_info["key"]), fn.fn
        elif callable(fn):
            spec, target = {"gpu": "none"}, fn
        else:
            raise TypeError(f"schedule() takes a function, not {type(fn).__name__}")
        code = cloudpickle.dumps(target)
        request.update(name=name or getattr(fn, "__name__", "function"), code_bytes=len(code), spec=spec)
        body = code + arguments
    data = _check(*_raw(control, "POST", "schedules", {"spec": json.dumps(request)}, body))
    view = json.loads(data)
    return Schedule(view["id"], control=control, view=view)


def schedules(control=None) -> list[Schedule]:
    """This kernel's schedules (with the server's token: all of them)."""
    control = _control(control)
    return [Schedule(v["id"], control=control, view=v) for v in control.request("GET", "schedules")["schedules"]]

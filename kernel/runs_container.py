"""The container's side of a server-owned run (server_ext/runs.py names `run_in_container` by reference in
the apply request it sends): run a function, a cell or a whole notebook, and answer with plain data only
(a flag, bytes and strings), so the server never unpickles anything a container made.

Prints go to the container's log (the run's logs).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import traceback


def run_in_container(kind: str, code: bytes, args, limit: int):
    """(ok, pickled result or None, JSON text or None, error text or None).

    kind "call": code is cloudpickle(fn), args cloudpickle((args, kwargs));
    "json": code is cloudpickle(fn), args the JSON text of its keyword arguments (REST);
    "cell": code is the cell's source, args cloudpickle({name: value}) of the names it reads; the result is
    the dict of the variables it assigned (not modules or widgets, as for an attached cell);
    "notebook": code is the notebook's JSON, args unused; the result is the executed notebook (JSON), kept
    whether or not a cell failed."""
    with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
        if kind == "notebook":
            return _notebook(code, limit)
        try:
            value = _call(kind, code, args)
        except BaseException as exc:  # noqa: BLE001 - the run's outcome
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            print(text, file=sys.__stderr__, flush=True)
            return (False, _pickled_exception(exc, limit), None, f"{type(exc).__name__}: {exc}")
        finally:
            sys.__stdout__.flush()
            sys.__stderr__.flush()
        return _answer(value, limit)


def _call(kind: str, code: bytes, args):
    import cloudpickle

    if kind == "call":
        fn = cloudpickle.loads(code)
        positional, keywords = cloudpickle.loads(args)
        return fn(*positional, **keywords)
    if kind == "json":
        fn = cloudpickle.loads(code)
        return fn(**json.loads(args))
    if kind == "cell":
        return _cell(code.decode(), cloudpickle.loads(args))
    raise ValueError(f"unknown run kind {kind!r}")


def _cell(source: str, values: dict) -> dict:
    """Run a cell in this container's shell, with `values` defined; the variables it assigned."""
    from IPython import get_ipython

    from .cell_names import comes_back_by_default, is_user_name, names_assigned, parse

    shell = get_ipython()
    if shell is None:
        namespace = dict(values)
        exec(compile(source, "<cell>", "exec"), namespace)  # noqa: S102 - the owner's own cell, in its container
    else:
        shell.user_ns.update(values)
        result = shell.run_cell(source, store_history=False, silent=True)
        if result.error_before_exec is not None:
            raise result.error_before_exec
        if result.error_in_exec is not None:
            raise result.error_in_exec
        namespace = shell.user_ns
    return {name: namespace[name] for name in sorted(names_assigned(parse(source)))
            if is_user_name(name) and name in namespace and comes_back_by_default(namespace[name])}


def _answer(value, limit: int):
    import cloudpickle

    try:
        pickled = cloudpickle.dumps(value)
    except Exception as exc:  # noqa: BLE001
        return (False, None, None, f"the result could not be pickled ({type(exc).__name__}: {exc})")
    as_json = _json(value)
    if limit and len(pickled) > limit:
        return (True, None, None, f"the result is {len(pickled)} bytes pickled, over c.Cellhop.run_result_limit "
                                  f"({limit} bytes): it was not kept. Write large results to a volume")
    return (True, pickled, as_json, None)


def _json(value) -> str | None:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None


def _pickled_exception(exc: BaseException, limit: int) -> bytes | None:
    import cloudpickle

    try:
        pickled = cloudpickle.dumps(exc)
        cloudpickle.loads(pickled)
    except Exception:  # noqa: BLE001 - an exception that cannot travel: its text still does
        pickled = cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return pickled if not limit or len(pickled) <= limit else None


# -- notebooks ------------------------------------------------------------------------------
def _notebook(code: bytes, limit: int):
    """Execute a whole notebook (nbclient, a kernel of this container's Python); the executed notebook."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.reads(code.decode(), as_version=4)
    failure: list[str] = []
    work = tempfile.mkdtemp(prefix="cellhop-notebook-")
    os.environ.setdefault("JUPYTER_RUNTIME_DIR", os.path.join(work, ".runtime"))

    def execute():
        import asyncio

        # outputs may trail a cell's reply on a busy host: wait for them (nbclient's 4 s default drops them)
        client = NotebookClient(nb, timeout=None, kernel_name="python3", iopub_timeout=60, startup_timeout=300,
                                resources={"metadata": {"path": work}})
        try:
            asyncio.run(client.async_execute())
        except CellExecutionError as exc:
            failure.append(str(exc))
        except BaseException as exc:  # noqa: BLE001 - the run fails, the notebook as far as it went is kept
            failure.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=execute, name="cellhop-notebook")  # its own event loop
    thread.start()
    thread.join()
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                failure.insert(0, f"cell {index} raised {output.get('ename')}: {output.get('evalue')}")
                break
        if failure and failure[0].startswith(f"cell {index} "):
            break
    text = nbformat.writes(nb)
    if failure:
        print(failure[-1], file=sys.__stderr__, flush=True)
    if limit and len(text) > limit:
        return (not failure, None, None, f"the executed notebook is {len(text)} bytes, over "
                                         f"c.Cellhop.run_result_limit ({limit} bytes): it was not kept")
    import cloudpickle

    return (not failure, cloudpickle.dumps(json.loads(text)), text, failure[0] if failure else None)

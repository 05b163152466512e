"""Schedules and notebooks as jobs (server_ext/schedules.py, server_ext/runs_notebook.py, server_ext/cli_runs.py),
on a real jupyter_server with real kernels and containers; the CLI runs as a user types it, in a subprocess:

- the cron parser (five fields, ranges, steps, lists; either day field);
- `cellhop.schedule(f, every="2s")` fires runs; paused, it fires none; `cellhop schedules` lists, resumes and
  deletes it;
- `cellhop run NB -p name=value --output OUT` writes the executed notebook with the parameters injected after
  the `parameters` cell and its outputs; a notebook whose cell raises is a failed run (exit status 1) whose saved
  notebook shows the error under that cell and no later cell ran.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time

import nbformat
import pytest
from server_kernel_client import run

from cellhop.errors import CellhopError
from cellhop.server_ext.schedules_cron import Cron, parse_every

pytestmark = pytest.mark.timeout(300)


def test_cron_fields_ranges_steps_lists_and_day_rules():
    def after(expr, moment):
        return dt.datetime.fromtimestamp(Cron(expr).next_after(moment.timestamp()))

    start = dt.datetime(2026, 3, 14, 10, 7, 30)  # a Saturday
    assert after("0 3 * * *", start) == dt.datetime(2026, 3, 15, 3, 0)
    assert after("*/15 * * * *", start) == dt.datetime(2026, 3, 14, 10, 15)
    assert after("5,50 9-11 * * *", start) == dt.datetime(2026, 3, 14, 10, 50)
    assert after("0 0 1 */3 *", start) == dt.datetime(2026, 4, 1, 0, 0)
    assert after("30 8 * * 1-5", start) == dt.datetime(2026, 3, 16, 8, 30)  # the next weekday: Monday
    assert after("0 12 20 * 0", start) == dt.datetime(2026, 3, 15, 12, 0)  # both day fields: either (Sunday)
    assert after("0 12 * * 7", start) == dt.datetime(2026, 3, 15, 12, 0)  # 7 is Sunday too
    for bad in ("* * * *", "61 * * * *", "*/0 * * * *", "a * * * *", "0 0 31 2 *"):
        with pytest.raises(CellhopError):
            Cron(bad).next_after(start.timestamp())
    assert parse_every("15m") == 900 and parse_every("2s") == 2 and parse_every(3600) == 3600
    with pytest.raises(CellhopError):
        parse_every("0.5s")


def test_without_a_server_runs_say_so_and_retries_are_checked():
    import cellhop
    from cellhop.run_errors import RunsNeedServer

    with pytest.raises(RunsNeedServer, match="Jupyter server with the cellhop"):
        cellhop.Run("r" + "0" * 32, control=object())  # a control plane with no REST API (embedded)
    assert cellhop.Retries(2).delay(1) == 1.0 and cellhop.Retries(3, backoff=3.0, initial_delay=2).delay(3) == 18.0
    for bad in ({"max_retries": -1}, {"backoff": 0.5}, {"initial_delay": 4000}):
        with pytest.raises(ValueError):
            cellhop.Retries(**bad)


@pytest.fixture
def jp_server_config(runtime_root, cellhop_gpus):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": cellhop_gpus, "runtime_root": str(runtime_root), "idle_timeout": 0,
                    "state_dir": str(runtime_root / "state")},
    }


async def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)
    return value


async def _api(jp_fetch, method, *path, body=None, **kwargs):
    r = await jp_fetch("cellhop", "api", *path, method=method, raise_error=False,
                       body=None if body is None else json.dumps(body), **kwargs)
    return r.code, (json.loads(r.body) if r.body else None)


async def _cli(jp_serverapp, *argv, cwd=None):
    """`cellhop ARGV` against the test server (a subprocess; the server keeps serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cellhop.server_ext.cli", *argv, "--url", jp_serverapp.connection_url,
        "--token", jp_serverapp.identity_provider.token, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    return proc.returncode, out.decode(), err.decode()


SCHEDULE = '''
import cellhop
ticks = cellhop.Volume("ticks")
ticks.info()

@cellhop.remote(volumes={"/ticks": ticks})
def tick(label):
    import time
    with open("/ticks/log", "a") as f:
        f.write(f"{label} {time.time()}\\n")
    return label

s = cellhop.schedule(tick, every="2s", args=("tock",))
print(s.id)
'''


async def test_a_schedule_fires_runs_pauses_resumes_and_is_deleted(start_kernel, jp_fetch, jp_serverapp):
    _, kc = await start_kernel()
    content, out, _ = await run(kc, SCHEDULE, timeout=120)
    assert content["status"] == "ok", (content, out)
    schedule_id = out.split()[0]

    async def two_succeeded():
        _, view = await _api(jp_fetch, "GET", "schedules", schedule_id)
        done = [r for r in view["runs"] if r["status"] == "succeeded"]
        return view if len(done) >= 2 else None

    view = await _until(two_succeeded, 240, "two firings of the schedule")
    assert view["every"] == 2.0 and view["fired"] >= 2 and view["name"] == "tick", view

    code, out, err = await _cli(jp_serverapp, "schedules", "pause", schedule_id)
    assert code == 0 and "paused" in out, (out, err)
    _, paused = await _api(jp_fetch, "GET", "schedules", schedule_id)
    assert paused["paused"] and paused["next"] is None
    await asyncio.sleep(4)  # two periods: a paused schedule fires nothing
    _, still = await _api(jp_fetch, "GET", "schedules", schedule_id)
    assert still["fired"] == paused["fired"], (still, paused)

    code, out, err = await _cli(jp_serverapp, "schedules", "list")
    assert code == 0 and schedule_id in out and "paused" in out and "every 2s" in out, (out, err)
    code, out, err = await _cli(jp_serverapp, "schedules", "resume", schedule_id)
    assert code == 0, err
    await _until(lambda: _fired_more(jp_fetch, schedule_id, still["fired"]), 60, "a firing after resume")
    code, out, err = await _cli(jp_serverapp, "schedules", "delete", schedule_id)
    assert code == 0 and "deleted" in out, err
    code, _ = await _api(jp_fetch, "GET", "schedules", schedule_id)
    assert code == 404

    content, out, _ = await run(kc, "print(len(cellhop.schedules()), ticks.read_bytes('log').decode().count('tock'))")
    count, ticks = map(int, out.split())
    assert count == 0 and ticks >= 3, out


async def _fired_more(jp_fetch, schedule_id, before):
    _, view = await _api(jp_fetch, "GET", "schedules", schedule_id)
    return view["fired"] > before


def _notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.write(nb, path)


async def test_cellhop_run_executes_a_notebook_with_parameters_and_a_failing_one_shows_where(jp_serverapp, tmp_path,
                                                                                              http_server_client):
    _notebook(tmp_path / "train.ipynb", [
        ("import os\nprint('first cell')", None),
        ("lr = 0.1\nepochs = 1\nname = 'default'", ["parameters"]),
        ("print(f'lr={lr} epochs={epochs} name={name}', os.environ.get('CUDA_VISIBLE_DEVICES') is not None)\n"
         "lr * epochs", None),
    ])
    code, out, err = await _cli(jp_serverapp, "run", "train.ipynb", "--gpu", "H100", "-p", "lr=0.01",
                                "-p", "epochs=3", "-p", "name=big", "--output", "trained.ipynb", cwd=tmp_path)
    assert code == 0 and "succeeded" in err, (out, err)
    nb = nbformat.read(tmp_path / "trained.ipynb", as_version=4)
    sources = [c.source for c in nb.cells]
    assert sources[2] == "# Parameters\nlr = 0.01\nepochs = 3\nname = 'big'\n", sources
    assert nb.cells[2].metadata["tags"] == ["injected-parameters"]
    assert nb.cells[0].outputs[0]["text"] == "first cell\n"
    assert nb.cells[3].outputs[0]["text"] == "lr=0.01 epochs=3 name=big True\n", nb.cells[3].outputs
    assert nb.cells[3].outputs[1]["data"]["text/plain"] == "0.03"

    _notebook(tmp_path / "broken.ipynb", [("x = 1\nprint('before')", None), ("1 / 0", None), ("print('after')", None)])
    code, out, err = await _cli(jp_serverapp, "run", "broken.ipynb", cwd=tmp_path)
    assert code == 1 and "failed" in err and "ZeroDivisionError" in err, (out, err)
    nb = nbformat.read(tmp_path / "broken.out.ipynb", as_version=4)
    assert nb.cells[0].outputs[0]["text"] == "before\n"
    assert nb.cells[1].outputs[0]["output_type"] == "error" and nb.cells[1].outputs[0]["ename"] == "ZeroDivisionError"
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None  # it stopped where it failed
    code, out, err = await _cli(jp_serverapp, "runs", "list")
    assert code == 0 and "broken.ipynb" in out and "failed" in out and "train.ipynb" in out, (out, err)

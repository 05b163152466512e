"""What a %%remote cell shows in the notebook: streams in order and live, rich displays, matplotlib,
the last expression, live widgets, input(), and a real .ipynb run with nbclient."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from kernel_fixtures import cellhop_kernel, kernel_env, short_runtime_dir  # noqa: F401  (a fixture)

NOTEBOOKS = Path(__file__).parent / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    cellhop_kernel.ok("%gpu H100")
    return cellhop_kernel


# -- streams ----------------------------------------------------------------------------------------
def test_stdout_and_stderr_keep_their_order(nb):
    ran = nb.ok("%%remote\n"
                "import sys\n"
                "for i in range(1, 51):\n"
                "    print(i, flush=True)\n"
                "    print(f'e{i}', file=sys.stderr, flush=True)")
    assert ran.stdout == "".join(f"{i}\n" for i in range(1, 51))
    assert ran.stderr == "".join(f"e{i}\n" for i in range(1, 51))
    # flushed writes of the two streams also interleave as written
    texts = [c["text"] for t, c in ran.outputs if t == "stream"]
    first_e1 = next(n for n, text in enumerate(texts) if "e1\n" in text)
    last_50 = next(n for n, text in enumerate(texts) if "50\n" in text and not text.startswith("e"))
    assert first_e1 < last_50


def test_output_streams_while_the_cell_runs(nb):
    ran = nb.ok("%%remote\n"
                "import time\n"
                "print('first', flush=True)\n"
                "time.sleep(1)\n"
                "print('second')")
    streams = [(t, c["text"]) for t, m, c in ran.arrivals if m == "stream"]
    assert "".join(text for _, text in streams) == "first\nsecond\n"
    first_at = next(t for t, text in streams if "first" in text)
    assert first_at < ran.elapsed - 0.7, (first_at, ran.elapsed)  # arrived about a second before the reply


# Pauses the notebook kernel's thread right after it sends anything to the container (as the OS may
# at any moment), so outputs that come back at once arrive before the sender runs its next line.
PAUSE_AFTER_SEND = """
import time as _time
_paused = []
for _session in get_ipython()._cellhop_cells.sessions.values():
    for _name in ("send", "send_message"):
        _original = getattr(_session.conn, _name)
        def _then_pause(*args, _original=_original, **kwargs):
            result = _original(*args, **kwargs)
            _time.sleep(0.3)
            return result
        _paused.append((_session.conn, _name, _original))
        setattr(_session.conn, _name, _then_pause)
assert _paused
"""
RESTORE_SEND = "for _conn, _name, _original in _paused:\n    setattr(_conn, _name, _original)"


def test_outputs_land_in_their_own_cell_even_if_the_sender_pauses(nb):
    """Regression: the relay must know a request before it is sent, else the first outputs of a cell
    that prints at once go to the previous cell and the cell stalls 5 s waiting for a missed idle."""
    nb.ok("%%remote --no-pull\nwarm = 1")
    nb.ok(PAUSE_AFTER_SEND)
    try:
        ran = nb.run("%%remote --no-pull\nprint('mine')")
    finally:
        nb.ok(RESTORE_SEND)
    assert ran.status == "ok" and ran.stdout == "mine\n", ran
    assert ran.elapsed < 2, ran


def test_many_fast_cells_each_get_their_own_output(nb):
    for i in range(60):
        ran = nb.run(f"%%remote --no-pull\nprint({i})")
        assert ran.status == "ok" and ran.stdout == f"{i}\n" and ran.elapsed < 2, (i, ran)


# -- rich output --------------------------------------------------------------------------------------
def test_html_display_renders_as_local(nb):
    ran = nb.ok("%%remote\nfrom IPython.display import HTML, display\n"
                "display(HTML('<b>from the container</b>'))")
    html = ran.displays("text/html")
    assert [d["data"]["text/html"] for d in html] == ["<b>from the container</b>"]


def test_matplotlib_figure_renders_as_png(nb):
    ran = nb.ok("%%remote\n"
                "import matplotlib.pyplot as plt\n"
                "fig, ax = plt.subplots(figsize=(2, 2))\n"
                "ax.plot([1, 3, 2])\n"
                "plt.show()")
    pngs = ran.displays("image/png")
    assert len(pngs) == 1, ran
    png = base64.b64decode(pngs[0]["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert "Figure" in pngs[0]["data"]["text/plain"]


def test_last_expression_is_displayed(nb):
    ran = nb.ok("%%remote\nanswer = 6 * 7\nanswer")
    plain = [d["data"].get("text/plain") for d in ran.displays()]
    assert plain == ["42"], ran
    assert nb.ok("print(answer)").stdout == "42\n"


def test_no_output_for_a_cell_ending_in_an_assignment(nb):
    ran = nb.ok("%%remote\nquiet = 1")
    assert ran.displays() == [] and ran.stdout == "" and ran.stderr == ""


# -- widgets ------------------------------------------------------------------------------------------
def test_remote_widget_renders_and_stays_live(nb):
    ran = nb.ok("%%remote --no-pull\n"
                "import ipywidgets as widgets\n"
                "slider = widgets.IntSlider(value=3, description='remote')\n"
                "slider")
    opens = ran.of_type("comm_open")
    assert opens and all(c["target_name"] == "jupyter.widget" for c in opens)
    views = ran.displays(WIDGET_VIEW)
    assert len(views) == 1, ran
    model_id = views[0]["data"][WIDGET_VIEW]["model_id"]
    slider_open = [c for c in opens if c["comm_id"] == model_id]
    assert slider_open and slider_open[0]["data"]["state"]["_model_name"] == "IntSliderModel"
    assert slider_open[0]["data"]["state"]["value"] == 3

    # the frontend moves the slider: the notebook kernel forwards that to the container's widget
    nb.send_shell("comm_msg", {"comm_id": model_id,
                               "data": {"method": "update", "state": {"value": 7}, "buffer_paths": []}})
    # ... which echoes the new state back to the frontend, through the notebook kernel
    nb.iopub_until(lambda m: m["msg_type"] == "comm_msg" and m["content"].get("comm_id") == model_id
                   and m["content"]["data"].get("state", {}).get("value") == 7)
    assert nb.ok("%%remote --no-pull\nprint(slider.value)").stdout == "7\n"

    # and a change made in the container reaches the frontend as a comm_msg on that comm
    ran = nb.ok("%%remote --no-pull\nslider.value = 11")
    updates = [c for c in ran.of_type("comm_msg") if c["comm_id"] == model_id]
    assert any(c["data"].get("state", {}).get("value") == 11 for c in updates), ran


def test_remote_widget_cell_prints_no_noise(nb):
    ran = nb.ok("%%remote --no-pull\nimport ipywidgets as widgets\nwidgets.IntSlider()")
    assert ran.displays(WIDGET_VIEW)
    assert ran.stderr == "", ran.stderr


# -- input() --------------------------------------------------------------------------------------------
def test_input_in_a_remote_cell_prompts_in_the_notebook(nb):
    prompts = []

    def answer(msg):
        prompts.append(msg["content"]["prompt"])
        nb.kc.input("world")

    ran = nb.run("%%remote\nname = input('who? ')\nprint('hello', name)",
                 allow_stdin=True, stdin_hook=answer, timeout=30)
    assert ran.status == "ok", ran
    assert prompts == ["who? "]
    assert "hello world" in ran.stdout
    assert nb.ok("print(name)").stdout == "world\n"


def test_input_without_a_frontend_stdin_fails_clearly(nb):
    ran = nb.run("%%remote\nvalue = input('never answered: ')", allow_stdin=False, timeout=30)
    assert ran.status == "error", ran
    assert ran.ename in ("StdinNotImplementedError", "EOFError"), ran


# -- a real notebook through nbclient ---------------------------------------------------------------
def _execute(name: str, **kwargs):
    import nbformat
    from nbclient import NotebookClient

    nb_node = nbformat.read(NOTEBOOKS / name, as_version=4)
    runtime = short_runtime_dir()
    try:
        client = NotebookClient(nb_node, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}}, **kwargs)
        client.execute(env=kernel_env(runtime))
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    return nb_node


def _cell_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("display_data", "execute_result"):
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def test_notebook_runs_with_nbclient():
    nb_node = _execute("remote_basics.ipynb")
    cells = {c.metadata.get("tags", ["?"])[0]: c for c in nb_node.cells if c.cell_type == "code"}
    assert "Selected for %%remote: H100" in _cell_text(cells["select"])
    remote = _cell_text(cells["remote"])
    assert "remote sum 45" in remote
    assert "visible GPU-simulated-h100-" in remote
    assert "✓ ran on container" in remote  # the status line was saved, in its final state
    assert _cell_text(cells["local"]).strip() == "local sum 90"
    html = [o for o in cells["display"].outputs if o["output_type"] == "display_data"
            and "text/html" in o["data"] and "cellhop-status" not in o["data"]["text/html"]]
    assert [o["data"]["text/html"] for o in html] == ["<i>made in the container</i>"]
    assert any(o["output_type"] == "display_data" and "image/png" in o["data"] for o in cells["display"].outputs)
    assert "90" in _cell_text(cells["display"])
    assert all(o["output_type"] != "error" for c in nb_node.cells for o in c.get("outputs", []))


def test_run_all_stops_at_a_remote_error():
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError) as info:
        _execute("remote_error.ipynb")
    assert "ZeroDivisionError" in str(info.value)
    assert "raised in the container" in str(info.value)


def test_notebook_files_are_saved_without_outputs():
    import nbformat

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb_node = nbformat.read(path, as_version=4)
        nbformat.validate(nb_node)
        assert all(not c.get("outputs") for c in nb_node.cells if c.cell_type == "code"), path

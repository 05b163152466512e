"""Red is for failures: what cellhop does on its own in normal operation is a quiet line, or nothing.

A real notebook kernel and real containers (simulated H100:2,A10G:1): an
import is not a value to bring back; a widget made remotely stays there
silently; a cell with other --volume/--image settings runs in another
container and says plainly what that means for remote state.
"""

from __future__ import annotations

import pytest

from kernel_fixtures import cellhop_kernel, is_status_line  # noqa: F401  (cellhop_kernel is a fixture)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    return cellhop_kernel


def notes(ran) -> list[str]:
    """The quiet lines of a cell: status-line displays other than its own status line."""
    return [c["data"]["text/plain"] for t, c in ran.outputs
            if t == "display_data" and is_status_line(c) and c["data"]["text/plain"].startswith("cellhop:")]


def test_an_import_is_not_brought_back(nb):
    # a module the container has and the notebook has not (an image's package, say)
    ran = nb.ok("%%remote\n"
                "import sys\n"
                "open('/tmp/only_in_the_container.py', 'w').write('X = 1')\n"
                "sys.path.insert(0, '/tmp')\n"
                "import only_in_the_container, json\n"
                "value = only_in_the_container.X + 1")
    assert ran.stderr == "", ran
    assert nb.ok("print(value, 'only_in_the_container' in globals())").stdout == "2 False\n"
    # still there for the next remote cell, and `--out` names one on purpose
    assert nb.ok("%%remote\nprint(only_in_the_container.X)").stdout == "1\n"


def test_a_remote_widget_stays_there_silently(nb):
    ran = nb.ok("%%remote\nimport ipywidgets as widgets\nslider = widgets.IntSlider(value=2)\nslider")
    assert ran.displays(WIDGET_VIEW), ran
    assert ran.stderr == "", ran.stderr
    assert nb.ok("print('slider' in globals())").stdout == "False\n"
    assert nb.ok("%%remote\nprint(slider.value)").stdout == "2\n"


def test_other_settings_on_a_busy_gpu_say_plainly_that_remote_state_was_lost(nb):
    first = nb.ok("%%remote --gpu A10G\nimport threading\nlock = threading.Lock()")  # lives only there
    ran = nb.ok("%%remote --gpu A10G --volume quiet-notes:/data\nprint('ran')")
    assert ran.stdout == "ran\n" and ran.stderr == "", ran
    [note] = notes(ran)
    assert first.container in note and "remote state lost" in note and "A10G" in note, note


def test_other_settings_on_a_free_host_say_where_the_cell_runs(nb):
    first = nb.ok("%%remote\nkept_there = 1")
    ran = nb.ok("%%remote --volume quiet-notes-2:/data\nprint('ran')")
    assert ran.stdout == "ran\n" and ran.stderr == "", ran
    [note] = notes(ran)
    assert ran.container in note and first.container in note and "--volume" in note, note
    assert "not here" in note
    assert nb.ok("%%remote\nprint(kept_there)").container == first.container  # the earlier one is still warm

"""A cellhop.remote function's exception shows the container's traceback in the notebook (as its cause)."""

from __future__ import annotations

import pytest
from kernel_fixtures import cellhop_kernel  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(180)


def test_a_remote_functions_error_shows_where_it_happened_in_the_container(cellhop_kernel):  # noqa: F811
    nb = cellhop_kernel
    nb.ok("import cellhop\n"
          "def inner_helper_xyz(v):\n"
          "    raise ValueError(f'bad value {v}')\n"
          "@cellhop.remote\n"
          "def f(v):\n"
          "    return inner_helper_xyz(v)")
    ran = nb.run("f.remote(7)")
    assert ran.status == "error" and ran.ename == "ValueError" and ran.evalue == "bad value 7"
    shown = ran.traceback_text
    assert "traceback in the container" in shown and "inner_helper_xyz" in shown, shown
    assert shown.index("traceback in the container") < shown.index("ValueError: bad value 7")

"""A `%%remote` cell's last expression is the notebook cell's result (Out[n], `_`, `Out`), as a local cell's is.

Real notebook kernel, real containers. A value that cannot come back (a
widget; one `--pull safe` refuses; `--no-pull`) is still shown, as a display.
"""

from __future__ import annotations

import pytest

from kernel_fixtures import cellhop_kernel, local_json  # noqa: F401  (cellhop_kernel is a fixture)


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    return cellhop_kernel


def _plain(contents: list[dict]) -> list[str]:
    return [c["data"].get("text/plain") for c in contents]


def test_last_expression_is_the_cells_execute_result(nb):
    ran = nb.ok("%%remote\n41 + 1")
    results = ran.of_type("execute_result")
    assert _plain(results) == ["42"], ran
    assert results[0]["execution_count"] == ran.reply["execution_count"]
    assert [c for c in ran.of_type("display_data") if c["data"].get("text/plain") == "42"] == []  # shown once
    n = ran.reply["execution_count"]
    assert local_json(nb, f"[Out[{n}], type(Out[{n}]).__name__]") == [42, "int"]
    ran = nb.ok("_ * 2")  # `_` is the remote cell's result
    assert _plain(ran.of_type("execute_result")) == ["84"]


def test_a_result_object_comes_back_as_itself(nb):
    nb.ok("class Box:\n"
          "    def __init__(self, v):\n"
          "        self.v = v\n"
          "    def __repr__(self):\n"
          "        return f'Box({self.v})'")
    ran = nb.ok("%%remote\nBox(5)")
    assert _plain(ran.of_type("execute_result")) == ["Box(5)"], ran
    assert nb.ok("print(type(_).__name__, _.v)").stdout == "Box 5\n"


def test_a_result_that_cannot_come_back_is_still_shown(nb):
    nb.ok("class Refused:\n"
          "    def __repr__(self):\n"
          "        return 'Refused()'")
    ran = nb.ok("%%remote --pull safe\nRefused()")
    assert ran.of_type("execute_result") == [], ran
    assert _plain(ran.displays()) == ["Refused()"], ran
    assert ran.stderr == "", ran.stderr  # the result is not a variable that stayed behind
    ran = nb.ok("%%remote --no-pull\n6 * 7")
    assert ran.of_type("execute_result") == [] and _plain(ran.displays()) == ["42"], ran


def test_a_cell_ending_in_a_statement_has_no_result(nb):
    ran = nb.ok("%%remote\nkept = 41 + 1")
    assert ran.displays() == [] and ran.stderr == "", ran
    assert nb.ok("print(kept)").stdout == "42\n"

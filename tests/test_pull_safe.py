"""`--pull safe`: what comes back from a container is data, rebuilt without running the container's code.

A cell that assigns an object whose `__reduce__` names `os.system` would run
that command in the (unsandboxed) notebook kernel as its value is unpickled
there; under `--pull safe` (or `cellhop.remote(pull="safe")`, or the kernel's
`c.Cellhop.pull = "safe"`) it is refused, naming the variable, and nothing of
it runs, while arrays, dicts and the other data types still come back intact.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from kernel_fixtures import local_json, start_cellhop_kernel

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def nb():
    with start_cellhop_kernel() as kernel:
        yield kernel


@pytest.fixture
def marker():
    folder = Path(tempfile.mkdtemp(prefix="ch-pull-", dir="/tmp"))
    yield folder / "hostile-code-ran"
    shutil.rmtree(folder, ignore_errors=True)


def hostile_cell(marker: Path, options: str = "") -> str:
    """A cell whose `h` runs `touch marker` wherever it is unpickled (the container only pickles it)."""
    return (f"%%remote --gpu none {options}\n"
            "import os, datetime\n"
            "import numpy as np\n"
            "class Hostile:\n"
            "    def __reduce__(self):\n"
            f"        return (os.system, ('touch {marker}',))\n"
            "h = Hostile()\n"
            "f = lambda: 1\n"
            "arr = np.arange(12, dtype=np.float32).reshape(3, 4)\n"
            "d = {'k': [1, 2.5, 'text', None, True, b'raw', (1, 2), {3}], 'when': datetime.date(2026, 1, 2),\n"
            "     'nested': {'a': np.array(['x', 'y'])}}\n")


def test_a_hostile_value_is_refused_under_pull_safe_and_data_comes_back(nb, marker):
    ran = nb.ok(hostile_cell(marker, "--pull safe"))
    assert not marker.exists()  # nothing of it ran in the notebook kernel
    assert "h was refused: the pull policy is 'safe'" in ran.stderr, ran
    assert "its pickle calls posix.system" in ran.stderr, ran  # os.system, as a pickle names it
    assert "f was refused" in ran.stderr and "a class or function defined in the container's code" in ran.stderr
    got = local_json(nb, "dict(h='h' in dir(), f='f' in dir(), arr=arr.tolist(), dtype=str(arr.dtype), "
                         "k=[repr(x) for x in d['k']], when=str(d['when']), nested=d['nested']['a'].tolist())")
    assert got == {"h": False, "f": False, "arr": [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]],
                   "dtype": "float32", "k": ["1", "2.5", "'text'", "None", "True", "b'raw'", "(1, 2)", "{3}"],
                   "when": "2026-01-02", "nested": ["x", "y"]}
    nb.ok("del arr, d")

    # the trust model: by default (--pull all) the notebook trusts the container's code, and it runs here
    nb.ok(hostile_cell(marker))
    assert marker.exists()


def test_a_function_with_pull_safe_returns_data_and_refuses_the_rest(nb, marker):
    nb.ok("import cellhop, os\n"
          "class Hostile:\n"
          "    def __reduce__(self):\n"
          f"        return (os.system, ('touch {marker}',))\n"
          "@cellhop.remote(gpu='none', pull='safe')\n"
          "def make(kind):\n"
          "    import numpy as np\n"
          "    if kind == 'hostile':\n"
          "        return Hostile()\n"
          "    if kind == 'error':\n"
          "        raise KeyError('missing')\n"
          "    return {'ones': np.ones(3), 'n': 7}\n")
    got = local_json(nb, "[make.remote('data')['ones'].tolist(), make.remote('data')['n']]")
    assert got == [[1.0, 1.0, 1.0], 7]
    ran = nb.run("make.remote('hostile')")
    assert ran.status == "error" and ran.ename == "UnsafeValue", ran
    assert "the result of make() was refused: the pull policy is 'safe'" in ran.evalue
    assert not marker.exists()
    ran = nb.run("make.remote('error')")  # a builtin exception still comes back, as itself
    assert ran.status == "error" and ran.ename == "KeyError" and "missing" in ran.evalue, ran
    nb.ok("make.shutdown()")


def test_the_kernels_configured_pull_safe_is_a_floor(marker):
    with start_cellhop_kernel(extra_arguments=("--Cellhop.pull=safe",)) as kernel:
        ran = kernel.ok(hostile_cell(marker, "--pull all"))  # a cell cannot loosen the notebook's policy
        assert not marker.exists() and "h was refused" in ran.stderr, ran
        assert local_json(kernel, "d['nested']['a'].tolist()") == ["x", "y"]


# -- the restricted unpickler itself ------------------------------------------------------------------------
def test_a_refused_pickle_imports_nothing_and_calls_nothing():
    import sys

    from cellhop.kernel.safe_pickle import UnsafeValue
    from cellhop.kernel.serialize import loads

    head = b"cantigravity\nfly\n(tR."  # GLOBAL antigravity.fly, called with (): a module never imported here
    assert "antigravity" not in sys.modules
    with pytest.raises(UnsafeValue, match=r"^v was refused: the pull policy is 'safe' .*antigravity\.fly"):
        loads([head], "safe", what="v")
    assert "antigravity" not in sys.modules


def test_pandas_frames_series_and_indexes_come_back_under_safe():
    pd = pytest.importorskip("pandas")
    import numpy as np

    from cellhop.kernel.serialize import dumps, loads

    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, np.nan], "s": ["x", "y", None],
                          "c": pd.Categorical(["u", "v", "u"]), "n": pd.array([1, None, 3], dtype="Int64"),
                          "t": pd.to_timedelta([1, 2, 3], unit="s")},
                         index=pd.date_range("2026-01-01", periods=3, freq="D", name="day"))
    series = pd.Series([1.0, 2.0], index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)]), name="v")
    for value in (frame, series, pd.Timestamp("2026-01-01", tz="UTC"), pd.Period("2026-01", freq="M")):
        back = loads(dumps(value), "safe", what="value")
        assert back.equals(value) if hasattr(value, "equals") else back == value

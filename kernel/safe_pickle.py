"""`--pull safe`: values from a container come back as data, rebuilt without running its code.

Unpickling runs code: a pickle names functions and classes (`__reduce__`) that
the unpickler calls, so a value pulled from a container with the default
`--pull all` runs whatever the container's code put in it, in the notebook
kernel, unsandboxed. That is the right default for your own cells (cellhop
moves your objects, classes and functions both ways), and wrong for code you
do not trust: a container serving the network (endpoints), a sandbox for
untrusted code, a cell from someone else.

Under `safe`, `loads` uses a restricted unpickler whose `find_class` hands out
only the constructors of data types (ALLOWED below): Python's builtins (int,
float, complex, str, bytes, bytearray, bool, None, list, tuple, dict, set,
frozenset, range, slice, and the builtin exception classes, so that a remote
function's error still comes back), datetime values, collections.OrderedDict,
numpy arrays, dtypes and scalars, and pandas DataFrames, Series, Index types,
Timestamps, Timedeltas, Categoricals and their extension arrays where pandas
is installed. Any other global a pickle names (a class or function defined in
the container, `exec`, `os.system`, a module's helper) is refused before it
is imported or called, so nothing of it runs, and the value is named in the
error (`UnsafeValue`). No module other than those above is ever imported.

What `safe` does not promise: the allowed constructors are those libraries'
own (numpy's and pandas' unpickling code runs on the container's bytes, as it
does when you load a .npy or a parquet file from someone); a value can still
be large (memory), or hold misleading data. The trust model is in
docs/security.md, "Values pulled back from a container".
"""

from __future__ import annotations

import builtins
import copyreg
import io
import pickle
import pickletools

from ..errors import CellhopError

POLICIES = ("all", "safe")

_NUMPY = {(f"{core}.{module}", name) for core in ("numpy.core", "numpy._core")
          for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                               ("numeric", "_frombuffer"))}
_MASKED = ["Boolean", "Float32", "Float64", *(f"{u}Int{b}" for u in ("", "U") for b in (8, 16, 32, 64))]
_PANDAS_CLASSES = {  # pandas 3 pickles them under their public names, pandas 2 under the defining modules
    "pandas": ("DataFrame", "Series", "Index", "RangeIndex", "MultiIndex", "DatetimeIndex", "TimedeltaIndex",
               "PeriodIndex", "IntervalIndex", "CategoricalIndex", "Categorical", "CategoricalDtype",
               "DatetimeTZDtype", "PeriodDtype", "IntervalDtype", "SparseDtype", "StringDtype", "Interval",
               "Period", "NA", *(f"{t}Dtype" for t in _MASKED)),
    "pandas.arrays": ("BooleanArray", "DatetimeArray", "FloatingArray", "IntegerArray", "IntervalArray",
                      "PeriodArray", "SparseArray", "StringArray", "TimedeltaArray"),
    "pandas.core.frame": ("DataFrame",),
    "pandas.core.series": ("Series",),
    "pandas.core.indexes.base": ("Index", "_new_Index"),
    "pandas.core.indexes.range": ("RangeIndex",),
    "pandas.core.indexes.multi": ("MultiIndex",),
    "pandas.core.indexes.category": ("CategoricalIndex",),
    "pandas.core.indexes.datetimes": ("DatetimeIndex", "_new_DatetimeIndex"),
    "pandas.core.indexes.timedeltas": ("TimedeltaIndex", "_new_TimedeltaIndex"),
    "pandas.core.indexes.period": ("PeriodIndex", "_new_PeriodIndex"),
    "pandas.core.indexes.interval": ("IntervalIndex", "_new_IntervalIndex"),
    "pandas.core.internals.managers": ("BlockManager", "SingleBlockManager"),
    "pandas.core.arrays.boolean": ("BooleanArray", "BooleanDtype"),
    "pandas.core.arrays.categorical": ("Categorical",),
    "pandas.core.arrays.datetimes": ("DatetimeArray",),
    "pandas.core.arrays.integer": ("IntegerArray", *(f"{t}Dtype" for t in _MASKED if "Int" in t)),
    "pandas.core.arrays.floating": ("FloatingArray", "Float32Dtype", "Float64Dtype"),
    "pandas.core.arrays.interval": ("IntervalArray",),
    "pandas.core.arrays.period": ("PeriodArray",),
    "pandas.core.arrays.sparse.array": ("SparseArray",),
    "pandas.core.arrays.string_": ("StringArray", "StringDtype"),
    "pandas.core.arrays.timedeltas": ("TimedeltaArray",),
    "pandas.core.dtypes.dtypes": ("CategoricalDtype", "DatetimeTZDtype", "IntervalDtype", "PeriodDtype",
                                  "SparseDtype"),
    "pandas._libs.arrays": ("__pyx_unpickle_NDArrayBacked",),
    "pandas._libs.internals": ("_unpickle_block",),
    "pandas._libs.interval": ("Interval", "__pyx_unpickle_IntervalMixin"),
    "pandas._libs.missing": ("NA",),
    "pandas._libs.sparse": ("IntIndex", "BlockIndex"),
    "pandas._libs.tslibs.nattype": ("__nat_unpickle", "_nat_unpickle"),
    "pandas._libs.tslibs.period": ("Period",),
    "pandas._libs.tslibs.timedeltas": ("_timedelta_unpickle",),
    "pandas._libs.tslibs.timestamps": ("_unpickle_timestamp",),
    "pytz": ("_p", "_UTC"),  # a pytz time zone, by its name
}
_OFFSETS = "pandas._libs.tslibs.offsets"  # a frequency (Day, Hour, MonthEnd...): any BaseOffset class there
# (module, name) pairs a `safe` pickle may name: constructors of data, nothing that runs what it is given.
ALLOWED = frozenset({
    *(("builtins", n) for n in ("complex", "set", "frozenset", "bytearray", "range", "slice")),
    *(("datetime", n) for n in ("date", "datetime", "time", "timedelta", "timezone")),
    ("collections", "OrderedDict"),
    ("numpy", "dtype"), ("numpy", "ndarray"), *_NUMPY,
    *((module, name) for module, names in _PANDAS_CLASSES.items() for name in names),
})
_EXTENSIONS = {"EXT1", "EXT2", "EXT4"}


class UnsafeValue(CellhopError, pickle.UnpicklingError):
    """A value from a container is not plain data, and `--pull safe` refused to rebuild it."""


def check_policy(pull: str) -> str:
    """'all' or 'safe'; a CellhopError naming the choices otherwise."""
    if pull not in POLICIES:
        raise CellhopError(f"pull={pull!r} is not a pull policy; use 'all' (any value: unpickling runs the "
                           "container's code in this kernel) or 'safe' (data types only)")
    return pull


def stricter(*policies: str | None) -> str:
    """'safe' when any of `policies` says so, else 'all'."""
    return "safe" if "safe" in policies else "all"


def _allowed_class(module: str, name: str) -> bool:
    """A builtin exception class, or a pandas frequency class: data, by its type (checked after import)."""
    if "." in name or module not in ("builtins", _OFFSETS):
        return False
    if module == "builtins":
        value = getattr(builtins, name, None)
        return isinstance(value, type) and issubclass(value, BaseException)
    from pandas._libs.tslibs import offsets  # named by the pickle: pandas is installed

    value = getattr(offsets, name, None)
    return isinstance(value, type) and issubclass(value, offsets.BaseOffset)


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that rebuilds data types only (see the module docstring)."""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED or _allowed_class(module, name):
            return super().find_class(module, name)
        raise UnsafeValue(f"{module}.{name}")


def _why(refused: str) -> str:
    if refused.startswith("cloudpickle."):
        return "it holds a class or function defined in the container's code"
    return f"its pickle calls {refused}"


def loads_safe(head, buffers: list, what: str):
    """Rebuild pickle `head` (its out-of-band `buffers`) as data only; an UnsafeValue names `what`."""
    if copyreg._inverted_registry and any(op.name in _EXTENSIONS for op, _, _ in pickletools.genops(head)):
        # extension codes resolve through a cache that find_class never sees; none are registered normally
        raise UnsafeValue(f"{what} was refused: the pull policy is 'safe' and its pickle uses copyreg "
                          "extension codes")
    try:
        return SafeUnpickler(io.BytesIO(head), buffers=buffers).load()
    except UnsafeValue as exc:
        raise UnsafeValue(
            f"{what} was refused: the pull policy is 'safe' (--pull safe, pull='safe' or c.Cellhop.pull) and "
            f"{_why(str(exc))}; only data comes back (numpy arrays, pandas DataFrames and Series, int, float, "
            "str, bytes, bool, None, list, tuple, dict, set, datetime). Nothing of it ran in this notebook. "
            "Turn it into such data in the container, or use --pull all if you trust the code that made "
            "it") from None

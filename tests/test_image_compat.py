"""The check before values travel into an image (kernel/image_compat.py), without building one:
a Python minor version apart is an error for anything that travels as bytecode (functions and classes
of the notebook, and objects of such classes), a warning for the rest."""

from __future__ import annotations

import fractions
import sys
import types
import warnings

import pytest

from cellhop.kernel.image_compat import ImageMismatch, ImageVersionWarning, check_image_compat


def _other_minor() -> str:
    return "%d.%d.0" % (sys.version_info[0], sys.version_info[1] - 1)


def _info(python: str) -> dict:
    import cloudpickle

    return {"key": "k" * 32, "python_version": python, "packages": {"cloudpickle": cloudpickle.__version__},
            "modules": []}


class Point:  # as if typed in a notebook cell
    def __init__(self, x):
        self.x = x


Point.__module__ = "__main__"


@pytest.fixture
def helpers_module(monkeypatch):
    """A module of the notebook's folder (no distribution, not in the image)."""
    module = types.ModuleType("notebook_helpers_xyz")
    exec("class Config:\n    def __init__(self):\n        self.n = 1\n", module.__dict__)
    module.Config.__module__ = "notebook_helpers_xyz"
    monkeypatch.setitem(sys.modules, "notebook_helpers_xyz", module)
    return module


def test_an_object_of_a_notebook_class_is_an_error_a_minor_apart():
    with pytest.raises(ImageMismatch, match=r"an instance of Point"):
        check_image_compat({"p": Point(1)}, _info(_other_minor()), "'img'")
    with pytest.raises(ImageMismatch, match=r"Python is"):  # inside a container, or an attribute, too
        check_image_compat({"ps": [Point(1)]}, _info(_other_minor()), "'img'")
    holder = fractions.Fraction(1, 2)
    box = types.SimpleNamespace(inner=Point(2), ratio=holder)
    with pytest.raises(ImageMismatch, match=r"an instance of Point"):
        check_image_compat({"box": box}, _info(_other_minor()), "'img'")


def test_an_object_of_a_class_the_image_cannot_import_is_an_error_a_minor_apart(helpers_module):
    with pytest.raises(ImageMismatch, match=r"an instance of Config"):
        check_image_compat({"cfg": helpers_module.Config()}, _info(_other_minor()), "'img'")
    # added to the image with add_local_python_source: it imports there, nothing travels by value
    info = {**_info(_other_minor()), "modules": ["notebook_helpers_xyz"]}
    with pytest.warns(ImageVersionWarning):
        check_image_compat({"cfg": helpers_module.Config()}, info, "'img'")


def test_plain_values_a_minor_apart_are_only_a_warning():
    with pytest.warns(ImageVersionWarning, match="Python"):
        notes = check_image_compat({"r": fractions.Fraction(1, 3), "n": [1, 2], "d": {"a": 1.5}},
                                   _info(_other_minor()), "'img'")
    assert any("Python" in n for n in notes)


def test_same_minor_notebook_objects_travel():
    here = "%d.%d.0" % sys.version_info[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_image_compat({"p": Point(1)}, _info(here), "'img'") == []

"""Notebooks as runs: parameters injected as papermill does, into a new cell (tagged
`injected-parameters`) right after the cell tagged `parameters` (at the top when none is), so the
notebook's defaults are overridden and the executed notebook shows what it ran with. The server only
reads and writes JSON here; a container executes the notebook (kernel/runs_container.py).
"""

from __future__ import annotations

import json

from ..errors import CellhopError

MAX_PARAMETERS = 256


def parameter_value(text: str):
    """What `-p name=value` means, as papermill's CLI reads it: True/False/None, an int, a float, else text."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def inject(nb: dict, parameters: dict) -> dict:
    """`nb` (nbformat 4 JSON) with a cell assigning `parameters` after the `parameters` cell."""
    if not isinstance(parameters, dict) or len(parameters) > MAX_PARAMETERS:
        raise CellhopError(f"parameters must be a JSON object of at most {MAX_PARAMETERS} names")
    for name in parameters:
        if not (isinstance(name, str) and name.isidentifier()):
            raise CellhopError(f"parameter {str(name)[:40]!r} is not a Python name; give -p name=value")
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise CellhopError("that is not a notebook (no cells); give an .ipynb file")
    cells = [c for c in cells if "injected-parameters" not in (c.get("metadata", {}).get("tags") or [])]
    if not parameters:
        return {**nb, "cells": cells}
    source = "# Parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in parameters.items())
    cell = {"cell_type": "code", "execution_count": None, "id": "injected-parameters",
            "metadata": {"tags": ["injected-parameters"]}, "outputs": [], "source": source}
    at = next((i + 1 for i, c in enumerate(cells) if "parameters" in (c.get("metadata", {}).get("tags") or [])), 0)
    return {**nb, "cells": [*cells[:at], cell, *cells[at:]]}


def notebook_input(notebook, parameters: dict) -> bytes:
    """What a notebook run's container executes: the notebook's JSON with the parameters injected."""
    if isinstance(notebook, (str, bytes)):
        try:
            notebook = json.loads(notebook)
        except ValueError as exc:
            raise CellhopError(f"the notebook is not JSON ({exc}); give an .ipynb file") from None
    if not isinstance(notebook, dict) or notebook.get("nbformat") != 4:
        raise CellhopError("give a notebook in nbformat 4 (an .ipynb file JupyterLab saved)")
    return json.dumps(inject(notebook, parameters)).encode()

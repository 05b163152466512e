"""Which names a cell reads from, and assigns to, the namespace it runs in; and which cell runs now."""

from __future__ import annotations

import ast
import re

# IPython's own names in a user namespace: never shipped, never brought back.
_IPYTHON_NAMES = re.compile(r"^(_|__|___|_i|_ii|_iii|_i\d+|_\d+|_oh|_ih|_dh|In|Out|exit|quit|get_ipython)$")


def running_cell_number(shell) -> int | None:
    """The execution count of the cell running now (`In[n]`). IPython 9 counts the next cell before
    running this one, IPython 8 after, so `shell.execution_count` is off by one in one of them; the result
    the displayhook holds during the cell is right in both."""
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    count = getattr(result, "execution_count", None)
    return count if count is not None else getattr(shell, "execution_count", None)


def is_user_name(name: str) -> bool:
    return not (name.startswith("__") and name.endswith("__")) and not _IPYTHON_NAMES.match(name)


def parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except SyntaxError:
        return None  # the container reports it, with its own line numbers


def names_read(tree: ast.Module | None) -> set[str]:
    """Every name loaded anywhere in the cell (functions defined in it read globals too)."""
    if tree is None:
        return set()
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


class _TopLevelStores(ast.NodeVisitor):
    """Names bound at the cell's top level (not inside function or class bodies)."""

    def __init__(self):
        self.names: set[str] = set()

    def visit_Name(self, node):
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.names.add(node.id)

    def visit_FunctionDef(self, node):
        self.names.add(node.name)
        for deco in node.decorator_list:
            self.visit(deco)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self.names.add(node.name)

    def visit_Lambda(self, node):
        pass

    def visit_Import(self, node):
        for alias in node.names:
            self.names.add(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_Global(self, node):
        self.names.update(node.names)


def names_assigned(tree: ast.Module | None) -> set[str]:
    if tree is None:
        return set()
    visitor = _TopLevelStores()
    visitor.visit(tree)
    # `global x` inside a function defined in the cell also rebinds x in the namespace
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            visitor.names.update(node.names)
    return {n for n in visitor.names if is_user_name(n)}


def comes_back_by_default(value) -> bool:
    """Whether a value a cell assigned comes back without `--out` naming it: not a module (an import
    is not a value; the notebook imports its own) and not a live widget or comm (it lives where its
    comm does: the frontend talks to it in the container, through the notebook)."""
    import sys
    import types

    if isinstance(value, types.ModuleType):
        return False
    for module, name in (("ipywidgets", "Widget"), ("comm.base_comm", "BaseComm")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(value, cls):
            return False
    return True

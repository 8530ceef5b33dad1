"""The core is pure: nothing under hyperflexis_sglang/core/ imports I/O, clocks or randomness.

Time and randomness are passed in (see docs: "Pure core, thin shell"). The scan
uses ``ast`` so it sees every import statement, including ones inside
functions or ``if TYPE_CHECKING`` blocks, and dynamic imports of a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "hyperflexis_sglang" / "core"
FORBIDDEN = {"sglang", "torch", "fastapi", "httpx", "asyncio", "time", "random", "requests", "os",
             "subprocess", "socket"}
CORE_FILES = sorted(CORE.rglob("*.py"))


def imported_roots(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) for every absolute import and literal dynamic import in ``tree``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("__import__", "import_module"):
                out.append((node.lineno, node.args[0].value.split(".")[0]))
    return out


def test_core_has_python_files():
    assert len(CORE_FILES) >= 8, CORE_FILES  # slo, perf_model, scheduling/*, routing/*


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_nothing_impure(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [f"{path.name}:{line} imports {mod}" for line, mod in imported_roots(tree) if mod in FORBIDDEN]
    assert not bad, bad


@pytest.mark.parametrize("source, expected", [
    ("import time", {"time"}),
    ("import os.path", {"os"}),
    ("from random import Random", {"random"}),
    ("from asyncio.tasks import sleep", {"asyncio"}),
    ("def f():\n    import torch", {"torch"}),
    ("import importlib\nimportlib.import_module('sglang.srt')", {"importlib", "sglang"}),
    ("__import__('socket')", {"socket"}),
    ("from . import slo\nfrom ..perf_model import PerfModel", set()),
    ("import numpy as np", {"numpy"}),
])
def test_scanner_sees_imports(source, expected):
    """The scanner itself: otherwise a silent scanner would make the purity test vacuous."""
    assert {m for _, m in imported_roots(ast.parse(source))} == expected

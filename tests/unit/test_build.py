"""The build under test is the one asked for, whole, and both builds run the same source.

`make test` runs the suite once per interpreter and build and sets LWSOBS_EXPECT_BUILD, so a
compiled run whose extensions failed to load (or an interpreted run that still finds some)
fails here instead of passing on the wrong code.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from lwsobs import build

ROOT = Path(__file__).resolve().parents[2]


def test_the_build_is_the_one_asked_for_and_whole() -> None:
    expected = os.environ.get("LWSOBS_EXPECT_BUILD")
    kind = build.build_kind()
    assert kind != "mixed", build.compiled_modules()
    if expected is not None:
        assert kind == expected


def test_setup_compiles_exactly_the_listed_modules() -> None:
    """setup.py reads COMPILED from build.py's text; it must find the tuple the package has."""
    namespace: dict[str, object] = {"__file__": str(ROOT / "setup.py")}
    source = (ROOT / "setup.py").read_text()
    tree = ast.parse(source)
    reader = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "compiled_modules"
    )
    module = ast.Module(body=[*_imports(tree), reader], type_ignores=[])
    exec(compile(module, "setup.py", "exec"), namespace)
    assert namespace["compiled_modules"]() == list(build.COMPILED)  # type: ignore[operator]


def _imports(tree: ast.Module) -> list[ast.stmt]:
    """setup.py's imports but setuptools': the reader needs none of it, and a venv on CPython
    3.12+ has no setuptools (pip builds in an isolated environment)."""
    return [
        n
        for n in tree.body
        if isinstance(n, ast.Import | ast.ImportFrom)
        and not (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("setuptools"))
    ]


@pytest.mark.parametrize("name", build.COMPILED)
def test_every_compiled_module_has_its_python_source(name: str) -> None:
    """One source: each extension is built from a .py file in the package, never by hand."""
    source = ROOT / (name.replace(".", "/") + ".py")
    assert source.is_file()
    origin = importlib.import_module(name).__file__ or ""
    if origin.endswith(tuple(EXTENSION_SUFFIXES)):
        assert Path(origin).parent == source.parent


def test_no_hand_written_c_in_the_package() -> None:
    assert sorted(p.name for p in (ROOT / "lwsobs").rglob("*.c")) == []


def test_this_interpreter_is_in_the_supported_range() -> None:
    assert (3, 11) <= sys.version_info[:2] <= (3, 13)

"""The build: mypyc compiles the hot modules (lwsobs/build.py lists them); metadata is in
pyproject.toml.

A setup.py because the list of extension modules is computed (mypycify), which pyproject.toml
cannot express. `LWSOBS_BUILD=interpreted` builds no extension at all: the same source then runs
on the interpreter (how CI proves both builds pass every test). Any other value but `compiled`
(the default) is refused, as is a Python outside the supported range, before anything is built.
"""

import ast
import os
import sys
from pathlib import Path

from setuptools import setup

SUPPORTED = ((3, 11), (3, 13))  # keep in step with requires-python in pyproject.toml

if not SUPPORTED[0] <= sys.version_info[:2] <= SUPPORTED[1]:
    sys.exit(
        f"lwsobs supports CPython {SUPPORTED[0][0]}.{SUPPORTED[0][1]} to "
        f"{SUPPORTED[1][0]}.{SUPPORTED[1][1]}; this is {sys.version.split()[0]} ({sys.executable})"
    )


def compiled_modules() -> list[str]:
    """COMPILED from lwsobs/build.py, read from its text: the package cannot be imported yet."""
    tree = ast.parse(Path(__file__).with_name("lwsobs").joinpath("build.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "COMPILED":
            return list(ast.literal_eval(node.value))  # type: ignore[arg-type]
    raise SystemExit("lwsobs/build.py has no COMPILED tuple")


def extensions() -> list[object]:
    kind = os.environ.get("LWSOBS_BUILD", "compiled")
    if kind == "interpreted":
        return []
    if kind != "compiled":
        sys.exit(f"LWSOBS_BUILD must be 'compiled' or 'interpreted', got {kind!r}")
    from mypyc.build import mypycify

    paths = [name.replace(".", "/") + ".py" for name in compiled_modules()]
    return mypycify(paths, opt_level="3", debug_level="1")


setup(ext_modules=extensions())

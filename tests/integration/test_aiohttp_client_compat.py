"""Both aiohttp sources on the oldest aiohttp the project supports (pyproject: aiohttp>=3.10).

The project's venv has the newest aiohttp; the client and server sources hook aiohttp
internals, so their test modules also run in a second venv with the oldest allowed aiohttp, in a
subprocess. That venv is cached in .venv-compat-aiohttp/ (rebuilt when the pins change):
pyproject's other dependencies and pytest at the versions the project's venv has, aiohttp at its
lower bound, and lwsobs installed editable with --no-deps, so it always runs the code in this
checkout.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from lwsobs.build import build_kind
from tests.integration import test_aiohttp_client, test_aiohttp_server

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".venv-compat-aiohttp"
VENV = CACHE / f"venv-{sys.version_info[0]}.{sys.version_info[1]}"  # one per interpreter
STAMP = VENV / "lwsobs-compat.json"
PYTHON = VENV / "bin" / "python"
MODULES = (test_aiohttp_client, test_aiohttp_server)


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return match.group(0)


def oldest_aiohttp() -> str:
    """aiohttp's lower bound in pyproject, as a full version (3.10 -> 3.10.0)."""
    for requirement in _dependencies():
        if _name(requirement).lower() == "aiohttp":
            match = re.search(r">=\s*([0-9.]+)", requirement)
            assert match, requirement
            parts = match.group(1).split(".")
            return ".".join(parts + ["0"] * (3 - len(parts)))
    raise AssertionError("pyproject has no aiohttp dependency")


def _dependencies() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps: list[str] = tomllib.load(f)["project"]["dependencies"]
    return deps


def requirements() -> list[str]:
    """aiohttp at its lower bound; everything else as the project's venv has it."""
    pins = [f"aiohttp=={oldest_aiohttp()}"]
    names = [_name(r) for r in _dependencies() if _name(r).lower() != "aiohttp"]
    for name in [*names, "pytest", "pytest-asyncio"]:
        pins.append(f"{name}=={importlib.metadata.version(name)}")
    return pins


def _run(args: list[str | Path], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        [str(a) for a in args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _checked(args: list[str | Path], timeout: float) -> str:
    proc = _run(args, timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def compat_venv() -> Path:
    """The cached venv, built first if missing or built for other pins. Safe to run at once."""
    wanted = {"python": sys.version.split()[0], "requirements": requirements()}
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # git ignores the cache even without a root entry
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and json.loads(STAMP.read_text()) == wanted:
            return PYTHON
        shutil.rmtree(VENV, ignore_errors=True)
        _checked([sys.executable, "-m", "venv", VENV], timeout=300)
        _checked([PYTHON, "-m", "pip", "install", "-q", *wanted["requirements"]], timeout=900)
        # this checkout on the path, not installed: the compat run imports whichever build the
        # outer run has in place (an install would build, and could replace its extensions)
        site = _checked([PYTHON, "-c", "import site; print(site.getsitepackages()[0])"], 60)
        (Path(site.strip()) / "lwsobs-checkout.pth").write_text(f"{ROOT}\n")
        STAMP.write_text(json.dumps(wanted))
    return PYTHON


def test_aiohttp_sources_pass_their_tests_on_the_oldest_supported_aiohttp() -> None:
    python = compat_venv()
    probe = (
        "import aiohttp, lwsobs, lwsobs.build as b; "
        "print(aiohttp.__version__); print(lwsobs.__file__); print(b.build_kind())"
    )
    version, where, kind = _checked([python, "-c", probe], timeout=60).split()
    assert version == oldest_aiohttp()
    assert Path(where).resolve() == ROOT / "lwsobs" / "__init__.py"  # this checkout's code
    assert kind == build_kind()  # and the build the outer run tests

    paths = [str(Path(module.__file__ or "").relative_to(ROOT)) for module in MODULES]
    pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths]
    proc = _run(pytest, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    expected = sum(
        1 for module in MODULES for name in vars(module) if name.startswith("test_")
    )  # no parametrized tests in either module: one test per function, none skipped
    # the summary line; a test that closes its loop without cleanup may print after it
    assert re.search(rf"^{expected} passed in ", output, re.MULTILINE), output

"""Only the optional C fast paths; all metadata lives in pyproject.toml.

A setup.py rather than `[tool.setuptools] ext-modules`: that table is still experimental in
setuptools (it warns on every build) and needs setuptools >= 74.1, while this works with the
`setuptools>=68` the build already requires. `optional=True`: without a compiler the package
still installs and runs the pure-Python paths (and the tests that compare each fast path with
its pure-Python reference fail, as they must).
"""

from setuptools import Extension, setup

FAST_PATHS = (
    ("lwsobs.core._fastcore", "lwsobs/core/_fastcore.c"),  # per-request bookkeeping
    ("lwsobs.sources._fasthooks", "lwsobs/sources/_fasthooks.c"),  # aiohttp server hooks
    ("lwsobs.sinks._fastspan", "lwsobs/sinks/_fastspan.c"),  # span export worker
)

setup(
    ext_modules=[
        Extension(name, [source], extra_compile_args=["-Wall", "-Wextra"], optional=True)
        for name, source in FAST_PATHS
    ]
)

"""Only the C fast path for wire-v1 parsing; all metadata lives in pyproject.toml.

A setup.py rather than `[tool.setuptools] ext-modules`: that table is still experimental in
setuptools (it warns on every build) and needs setuptools >= 74.1, while this works with the
`setuptools>=68` the build already requires. `optional=True`: without a compiler the package
still installs and runs the pure-Python path (and tests/unit/test_fastwire.py fails, as it must).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "lwsobs.ingest._fastwire",
            ["lwsobs/ingest/_fastwire.c"],
            extra_compile_args=["-Wall", "-Wextra"],
            optional=True,
        )
    ]
)

"""Build configuration beyond pyproject.toml: the optional C decoder.

``lightning_stream._speedups`` is an *optional* extension: without a C compiler the build skips it
and the pure-Python decoder (same results, ~30x slower: benchmarks/README.md) is used.
"""

import sys

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "lightning_stream._speedups",
            ["lightning_stream/_speedups.c"],
            include_dirs=["lightning_stream/_ryu"],  # Ryu's d2s.c, vendored (float_json): see its README
            optional=True,
            extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-std=c99"],
        )
    ]
)

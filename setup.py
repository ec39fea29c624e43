"""Build the optional C meter extension.

Everything else about the package lives in pyproject.toml. The extension is
``optional``: where it cannot be compiled the package still installs and nea
falls back to the tracemalloc meter (see docs/budgets.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nea._meter",
            sources=[
                "csrc/meter.c",
                "csrc/blocks.c",
                "csrc/region.c",
                "csrc/slots.c",
                "csrc/module.c",
                "csrc/numpy.c",
                "csrc/clibs.c",
                "csrc/anyblocks.c",
                "csrc/trips.c",
            ],
            extra_compile_args=["-Wall", "-Wextra", "-O2"],
            optional=True,
        )
    ]
)

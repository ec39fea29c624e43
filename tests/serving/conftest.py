"""Fixtures shared with other test packages: the meter fixtures of the middleware tests
(``meter``: both meters, ``native``: the C extension, failing instead of skipping under
``NEA_REQUIRE_NATIVE=1``) and the CLI tests' ``start_nea`` subprocess factory."""

from tests.cli.conftest import start_nea
from tests.middleware.conftest import meter, native

__all__ = ["meter", "native", "start_nea"]

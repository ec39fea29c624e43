"""The meter fixtures of the middleware tests (``meter``: both meters, ``native``: the C
extension, failing instead of skipping under ``NEA_REQUIRE_NATIVE=1``)."""

from tests.middleware.conftest import meter, native

__all__ = ["meter", "native"]

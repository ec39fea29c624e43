import pytest

import nea
from nea import ConfigError


async def app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("never served")


def test_unknown_option_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"^unknown option 'prot'; expected one of"):
        nea.run(app, prot=8000)


def test_bad_option_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^--port: expected a whole number between"):
        nea.run(app, port=-1)


def test_workers_need_an_import_string() -> None:
    with pytest.raises(ConfigError, match=r"^--workers: more than one worker needs"):
        nea.run(app, workers=2)


def test_import_nea_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, nea; print('asyncio' in sys.modules, 'nea._run' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False"]

"""examples/oom.py: Nea's README transcript, without budgets (ASGI) and under nea's budget."""

from __future__ import annotations

import runpy
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from types import ModuleType

import httpx
import pytest
import pytest_asyncio

from .helpers import EXAMPLES_DIR, listening_socket, load_example, nea_server

OUT_OF_MEMORY = "Internal Server Error: Out of Memory"
# A subprocess start (interpreter, imports) plus two requests: seconds, not minutes.
CLI_TIMEOUT_SECONDS = 30.0


@pytest.fixture(scope="module")
def oom() -> ModuleType:
    return load_example("oom")


@pytest_asyncio.fixture
async def client(oom: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=oom.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        yield client


@pytest.mark.asyncio
async def test_allocates_the_kb_in_the_path(client: httpx.AsyncClient) -> None:
    response = await client.get("/10")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html"
    assert response.text == "successfully allocated 10kb of memory"


@pytest.mark.asyncio
async def test_without_a_budget_a_megabyte_is_fine(client: httpx.AsyncClient) -> None:
    response = await client.get("/1000")
    assert response.status_code == 200
    assert response.text == "successfully allocated 1000kb of memory"


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/", "/abc", "/-5", "/1.5", "/10/", "/١٠", "/10kb"])
async def test_a_path_that_is_not_a_number_is_not_found(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.asyncio
@pytest.mark.parametrize("digits", [20, 5000])
async def test_a_number_too_large_for_any_size_is_a_bad_request(
    client: httpx.AsyncClient, digits: int
) -> None:
    response = await client.get("/" + "9" * digits)
    assert response.status_code == 400


def test_the_budget_is_nea_s_region_and_a_kb_is_decimal(oom: ModuleType) -> None:
    import nea

    assert nea.parse_size(oom.BUDGET) == 512 * 1024
    assert oom.KB_BYTES == 1000
    assert oom.PORT == 8080


@pytest.mark.needs_integration
@pytest.mark.asyncio
async def test_transcript_under_nea_budget(oom: ModuleType) -> None:
    async with (
        nea_server(oom.app, budget=oom.BUDGET) as base_url,
        httpx.AsyncClient(base_url=base_url) as client,
    ):
        small = await client.get("/10")
        assert small.status_code == 200
        assert small.headers["content-type"] == "text/html"
        assert small.text == "successfully allocated 10kb of memory"

        big = await client.get("/1000")
        assert big.status_code == 500
        assert big.headers["content-type"] == "text/plain; charset=utf-8"
        assert big.text == OUT_OF_MEMORY

        # The trip closed that connection; the server carries on with the next one.
        again = await client.get("/10")
        assert again.status_code == 200
        not_a_number = await client.get("/abc")
        assert not_a_number.status_code == 404


def test_running_the_file_serves_it_on_8080_with_nea_s_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import nea

    calls: list[tuple[object, dict[str, object]]] = []

    def fake_run(app: object, **options: object) -> None:
        calls.append((app, options))

    monkeypatch.setattr(nea, "run", fake_run)
    namespace = runpy.run_path(str(EXAMPLES_DIR / "oom.py"), run_name="__main__")
    assert calls == [(namespace["app"], {"port": 8080, "budget": "512KiB"})]


@pytest.mark.needs_integration
def test_transcript_from_the_command_line() -> None:
    """``nea --app-dir examples oom:app --budget 512KiB``, as ``make run`` serves it."""
    with listening_socket() as sock:
        fd, port = sock.fileno(), sock.getsockname()[1]
        command = [sys.executable, "-m", "nea", "--app-dir", str(EXAMPLES_DIR), "oom:app"]
        command += ["--fd", str(fd), "--budget", "512KiB", "--no-access-log"]
        process = subprocess.Popen(command, pass_fds=(fd,), stderr=subprocess.PIPE)
    # Only nea holds the socket now: if it exits, connecting fails at once instead of waiting.
    try:
        base_url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base_url, timeout=CLI_TIMEOUT_SECONDS) as client:
            small, big = client.get("/10"), client.get("/1000")
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
    assert (small.status_code, small.text) == (200, "successfully allocated 10kb of memory")
    assert (big.status_code, big.text) == (500, OUT_OF_MEMORY)
    log = stderr.decode()
    assert "memory plan: 64 slots × 512.0 KiB" in log
    assert "GET /1000" in log


@pytest.mark.asyncio
async def test_transcript_under_the_middleware(oom: ModuleType) -> None:
    """The same budget through ``MemoryBudgetMiddleware`` (any server): no nea server needed."""
    from nea.middleware import MemoryBudgetMiddleware

    app = MemoryBudgetMiddleware(oom.app, budget=oom.BUDGET, slots=4)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        small = await client.get("/10")
        big = await client.get("/1000")
        # 512 KiB is 524 kb: the largest requests that fit are a little below that.
        near = await client.get("/500")
        over = await client.get("/525")
    assert (small.status_code, small.text) == (200, "successfully allocated 10kb of memory")
    assert (big.status_code, big.text) == (500, OUT_OF_MEMORY)
    assert big.headers["content-type"] == "text/plain; charset=utf-8"
    assert near.status_code == 200
    assert over.status_code == 500


@pytest.mark.needs_integration
@pytest.mark.asyncio
async def test_every_request_at_the_edge_of_the_budget_gets_a_whole_answer(
    oom: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    # 512 KiB = 524.288 kb; the app's own overhead is about 2 KiB, the server's about 1 KiB
    # more, so stepping by 1 kb across this range lands inside that window at least once.
    sizes = range(515, 531)
    caplog.set_level("INFO", logger="nea.access")
    outcomes: dict[int, tuple[int, str] | str] = {}
    async with nea_server(oom.app, budget=oom.BUDGET, access_log=True) as base_url:
        for kb in sizes:
            # A fresh connection each time: a trip closes the connection by design.
            async with httpx.AsyncClient(base_url=base_url) as client:
                try:
                    response = await client.get(f"/{kb}")
                except httpx.HTTPError as error:
                    outcomes[kb] = type(error).__name__
                    continue
            outcomes[kb] = (response.status_code, response.text)
    allowed = {(200, "successfully allocated {}kb of memory"), (500, OUT_OF_MEMORY)}
    for kb, outcome in outcomes.items():
        assert isinstance(outcome, tuple), f"/{kb}: no HTTP answer ({outcome})"
        assert (outcome[0], outcome[1].replace(str(kb), "{}")) in allowed, f"/{kb}: {outcome}"
    access_lines = [r.getMessage() for r in caplog.records if r.name == "nea.access"]
    for kb in sizes:
        assert any(f'"GET /{kb} HTTP/1.1"' in line for line in access_lines), f"/{kb}: no log"


@pytest.mark.asyncio
async def test_the_budget_sees_every_allocated_byte(oom: ModuleType) -> None:
    """N kb are really allocated inside the request (not, e.g., a lazily sized view)."""
    import nea

    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/300", "headers": []}
    with nea.budget("4MiB") as request_budget:
        await oom.app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert 300 * 1000 <= request_budget.peak < 300 * 1000 + 16 * 1024

"""A fake ASGI server side for admission tests: scripted ``receive``, recording ``send``.

Deterministic: the test decides when the client disconnects, and can await the moment
the app (or admission) first calls ``receive``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nea._types import Message, Scope


def http_scope(
    path: str = "/", method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


class FakeClient:
    """One request's server side: body messages, then a disconnect when told."""

    def __init__(self, body: list[bytes] | None = None) -> None:
        chunks = body or [b""]
        self.incoming: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        self.sent: list[Message] = []
        self.receive_calls = 0
        self.first_receive = asyncio.Event()
        self._gone = asyncio.Event()

    def disconnect(self) -> None:
        self._gone.set()

    async def receive(self) -> Message:
        self.receive_calls += 1
        self.first_receive.set()
        if self.incoming:
            return self.incoming.pop(0)
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        for message in self.sent:
            if message["type"] == "http.response.start":
                return int(message["status"])
        return None

    @property
    def headers(self) -> dict[bytes, bytes]:
        for message in self.sent:
            if message["type"] == "http.response.start":
                return {k.lower(): v for k, v in message.get("headers", [])}
        return {}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def complete(self) -> bool:
        return any(
            m["type"] == "http.response.body" and not m.get("more_body", False) for m in self.sent
        )


async def respond(send: Any, body: bytes = b"ok", status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""A small asyncio WebSocket client on wsproto, for tests: the second real client."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import IO_TIMEOUT_SECONDS
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.extensions import PerMessageDeflate


class WsprotoClient:
    """``await WsprotoClient.open(host, port, path)``; then ``send``/``next_event``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = WSConnection(ConnectionType.CLIENT)
        self._events: list[Event] = []

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str = "/",
        subprotocols: list[str] | None = None,
        deflate: bool = False,
    ) -> WsprotoClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        extensions: Any = [PerMessageDeflate()] if deflate else []
        request = Request(
            host=f"{host}:{port}",
            target=path,
            subprotocols=subprotocols or [],
            extensions=extensions,
        )
        await client.send(request)
        return client

    async def send(self, event: Event) -> None:
        self.writer.write(self.conn.send(event))
        await self.writer.drain()

    async def next_event(self) -> Event:
        while not self._events:
            data = await asyncio.wait_for(self.reader.read(65536), IO_TIMEOUT_SECONDS)
            self.conn.receive_data(data or None)
            self._events.extend(self.conn.events())
        return self._events.pop(0)

    async def handshake(self) -> AcceptConnection | RejectConnection:
        event = await self.next_event()
        assert isinstance(event, AcceptConnection | RejectConnection), event
        return event

    async def reject_body(self) -> bytes:
        body = b""
        while True:
            event = await self.next_event()
            assert isinstance(event, RejectData), event
            body += event.data
            if event.body_finished:
                return body

    async def close(self, code: int = 1000, reason: str | None = None) -> CloseConnection | None:
        """Send a close and return the server's answering close (None if it just left)."""
        await self.send(CloseConnection(code=code, reason=reason))
        try:
            while True:
                event = await self.next_event()
                if isinstance(event, CloseConnection):
                    return event
        except (ConnectionError, asyncio.IncompleteReadError):
            return None
        finally:
            self.writer.close()

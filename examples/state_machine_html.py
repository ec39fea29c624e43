"""A handler written as an explicit state machine, in the style of Nea's Elm-like example.

The request handler is a pure ``update(model, message) -> (model, command)`` function:

- the **model** says where the exchange is (reading the request body, sending the
  response head, sending the body, done);
- **messages** are what the outside world reports (a body chunk arrived, a send
  completed, the client went away);
- **commands** are what the handler wants done next (receive, send a message, stop).

A small driver (``app``) performs each command against ASGI's ``receive``/``send`` and
feeds the result back as a message. Every state change lives in ``update``, readable as
a table, and ``update`` can be tested without a server. The answer is always
``200 text/html`` with the body ``<html>foobar</html>``.

Run it with either of::

    nea --app-dir examples state_machine_html:app
    uvicorn --app-dir examples state_machine_html:app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = b"<html>foobar</html>"
RESPONSE_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/html"),
        (b"content-length", str(len(BODY)).encode("ascii")),
    ],
}
RESPONSE_BODY: Message = {"type": "http.response.body", "body": BODY}


# The model: where the exchange is, and how much request body was read (for logging/tests).
Phase = Literal["reading", "sending_head", "sending_body", "done"]


@dataclass(frozen=True)
class Model:
    phase: Phase
    body_bytes: int = 0


# Messages: what the outside world reports back to the handler.
@dataclass(frozen=True)
class BodyChunk:
    size: int
    more: bool


@dataclass(frozen=True)
class Sent:
    pass


@dataclass(frozen=True)
class ClientGone:
    pass


Msg = BodyChunk | Sent | ClientGone


# Commands: what the handler asks the driver to do next.
@dataclass(frozen=True)
class ReceiveCmd:
    pass


@dataclass(frozen=True)
class SendCmd:
    message: Message


@dataclass(frozen=True)
class Stop:
    pass


Command = ReceiveCmd | SendCmd | Stop


def init() -> tuple[Model, Command]:
    """Start by reading the request body (an HTTP request must be read before answering)."""
    return Model("reading"), ReceiveCmd()


def update(model: Model, msg: Msg) -> tuple[Model, Command]:
    """Every transition of the handler, in one place."""
    match model.phase, msg:
        case _, ClientGone():
            return Model("done", model.body_bytes), Stop()
        case "reading", BodyChunk(size=size, more=True):
            return Model("reading", model.body_bytes + size), ReceiveCmd()
        case "reading", BodyChunk(size=size, more=False):
            return Model("sending_head", model.body_bytes + size), SendCmd(RESPONSE_START)
        case "sending_head", Sent():
            return Model("sending_body", model.body_bytes), SendCmd(RESPONSE_BODY)
        case "sending_body", Sent():
            return Model("done", model.body_bytes), Stop()
    raise RuntimeError(f"state machine: no transition from {model.phase!r} on {msg!r}")


async def perform(command: ReceiveCmd | SendCmd, receive: Receive, send: Send) -> Msg:
    """Run one command against ASGI and translate the outcome into a message."""
    if isinstance(command, SendCmd):
        await send(command.message)
        return Sent()
    event = await receive()
    if event["type"] == "http.request":
        return BodyChunk(len(event.get("body", b"")), bool(event.get("more_body", False)))
    return ClientGone()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    model, command = init()
    while not isinstance(command, Stop):
        msg = await perform(command, receive, send)
        model, command = update(model, msg)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

"""Errors of the sans-IO HTTP core.

Owns: ``ProtocolError`` (the client broke HTTP; carries the status to answer with) and
``ResponseError`` (the application broke the ASGI/HTTP response rules). Must not import
asyncio, socket or anyio.
"""

from __future__ import annotations

from nea._errors import NeaError

# Reason phrases for the statuses the protocol layer itself produces.
_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class ProtocolError(NeaError):
    """The client sent something that is not acceptable HTTP/1.1.

    ``status`` is the response the server should answer with before closing the connection;
    the driver maps every ``ProtocolError`` to a response in one place.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {_REASONS.get(status, '')}: {detail}")
        self.status = status
        self.detail = detail

    @property
    def reason(self) -> str:
        return _REASONS.get(self.status, "Error")


class ResponseError(NeaError):
    """The application's response broke HTTP or ASGI rules (wrong order, wrong length).

    The connection cannot be trusted afterwards: the driver logs it and closes it.
    """

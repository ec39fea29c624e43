"""nea's sans-IO HTTP/1.1 core: bytes in, events out; events in, bytes out.

Owns: request parsing (through a pluggable parser backend), request-head validation, the
ASGI ``http`` scope, and response serialisation. Must not import asyncio, socket, anyio or
anything from ``nea._server`` — a test asserts it.
"""

"""The chunked transfer coding (RFC 9112 §7.1), decoded the same strict way llhttp does.

Owns: ``ChunkedDecoder``, which the h11 backend uses for chunked request bodies (h11 itself
accepts chunk sizes of any length and waits forever on lines ending in a bare LF), so that
both backends answer the same malformed bodies with the same 400. Must not import asyncio,
socket or anyio.
"""

from __future__ import annotations

import re
from typing import Final

from nea._http.errors import ProtocolError

# RFC 9112 §7.1 sets no bound on chunk-size; 16 hex digits are the 64 bits llhttp (the
# httptools backend) accepts before it reports "Chunk size overflow".
MAX_CHUNK_SIZE_DIGITS: Final = 16

_HEX: Final = re.compile(rb"[0-9A-Fa-f]+")
# Chunk extensions and trailer lines may hold anything but control characters (HTAB is fine).
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ChunkedDecoder:
    """Bytes of a chunked body in, its data out; ``ProtocolError(400)`` for bad framing.

    ``max_line_bytes`` bounds a chunk-size line and the trailer section (the server passes
    its request-head limit, as h11 does for every line it waits for).
    """

    __slots__ = ("_buffer", "_max_line_bytes", "_remaining", "_state", "_trailer_bytes")

    def __init__(self, max_line_bytes: int) -> None:
        self._max_line_bytes = max_line_bytes
        self._buffer = b""
        self._state = _SIZE
        self._remaining = 0
        self._trailer_bytes = 0

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        """``(data pieces, rest)``: ``rest`` is ``None`` while the body goes on, else the
        bytes that follow the body (the next request)."""
        buf = self._buffer + data if self._buffer else data
        self._buffer = b""
        pieces: list[bytes] = []
        pos, size = 0, len(buf)
        while pos < size:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, size - pos)
                pieces.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            if state == _DATA_END:
                # Exactly CRLF after the data: checked byte by byte, so garbage fails at once.
                end = buf[pos : pos + 2]
                if end != b"\r\n"[: len(end)]:
                    raise ProtocolError(400, "chunk data not followed by CRLF")
                if len(end) < 2:
                    break
                pos += 2
                self._state = _SIZE
                continue
            newline = buf.find(b"\n", pos)
            if newline == -1:
                if size - pos > self._max_line_bytes:
                    raise ProtocolError(400, "chunk-size line too long")
                break
            if newline == pos or buf[newline - 1] != 0x0D:
                raise ProtocolError(400, "chunk line not ended by CRLF (bare LF)")
            line = buf[pos : newline - 1]
            pos = newline + 1
            if state == _SIZE:
                self._remaining = _chunk_size(line)
                self._state = _DATA if self._remaining else _TRAILER
            elif not line:
                return pieces, buf[pos:]  # the empty line after the last chunk and trailers
            else:
                self._trailer_line(line)
        self._buffer = buf[pos:]
        return pieces, None

    def _trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self._max_line_bytes:
            raise ProtocolError(431, f"trailer section larger than {self._max_line_bytes} bytes")
        name, colon, _ = line.partition(b":")
        if not colon or not name or name[-1:] in b" \t" or line[:1] in b" \t":
            raise ProtocolError(400, f"malformed trailer line {line[:40]!r}")
        if _CONTROL.search(line):
            raise ProtocolError(400, "control character in a trailer line")


def _chunk_size(line: bytes) -> int:
    digits, _, extensions = line.partition(b";")
    if not _HEX.fullmatch(digits):
        raise ProtocolError(400, f"malformed chunk size {digits[:40]!r}")
    if len(digits) > MAX_CHUNK_SIZE_DIGITS:
        raise ProtocolError(400, f"chunk size longer than {MAX_CHUNK_SIZE_DIGITS} hex digits")
    if _CONTROL.search(extensions):
        raise ProtocolError(400, "control character in a chunk extension")
    return int(digits, 16)

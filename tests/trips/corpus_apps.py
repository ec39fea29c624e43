"""The trip corpus: routes that exceed their budget inside real libraries.

Each route of ``app`` (a raw ASGI dispatcher, so the corpus needs no framework of its own)
runs one library past a small budget: ``/<case>`` trips, ``/ok`` is the neighbour.
``fastapi_app`` and ``django_app`` are the framework cases. Sizes are chosen so each
library's single largest call takes the request well past a 4 MiB budget but stays
within the server's shared ceiling: the point is what happens *after* the crossing.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

ROWS = 60_000  # ~2.6 MB of JSON: about 10 MB of Python objects


def _make_rows() -> list[dict[str, Any]]:
    return [{"id": i, "name": f"row {i}", "tags": ["a", "b"], "score": i / 7} for i in range(ROWS)]


# Built at import, outside any budget: a request's trip then happens inside the library
# call that serialises or parses them, not while building its input.
_ROWS = _make_rows()


def _rows() -> list[dict[str, Any]]:
    return _ROWS


def _orjson_dumps() -> bytes:
    import orjson

    return orjson.dumps(_rows())[:64]


_ORJSON_DOC = json.dumps(_rows()).encode()


def _orjson_loads() -> bytes:
    import orjson

    return str(len(orjson.loads(_ORJSON_DOC))).encode()


def _models() -> Any:
    from pydantic import BaseModel, TypeAdapter

    class Row(BaseModel):
        id: int
        name: str
        tags: list[str]
        score: float

    class Page(BaseModel):
        rows: list[Row]

    rows = [Row(**r) for r in _ROWS]
    return TypeAdapter(list[Row]), rows, Page(rows=rows)


_ADAPTER, _MODELS, _PAGE = _models()


def _pydantic_dump_json() -> bytes:
    return _ADAPTER.dump_json(_MODELS)[:64]


def _pydantic_model_dump_json() -> bytes:
    return _PAGE.model_dump_json()[:64].encode()


def _msgpack() -> bytes:
    import msgpack

    return str(len(msgpack.packb(_rows()))).encode()


def _json() -> bytes:
    return json.dumps(_rows())[:64].encode()


def _zlib() -> bytes:
    data = os.urandom(1 << 20) * 12  # 12 MiB, one allocation past the limit
    packed = zlib.compress(data, 1)
    return str(len(zlib.decompress(packed))).encode()


def _swallow() -> bytes:
    """Swallows every MemoryError and keeps allocating in ``except ... as e`` blocks of a
    function whose bytecode offsets pass 256 (an unwind then needs a new int): the pattern
    that froze CPython when the allocation was refused."""
    keep = []
    pad = [0] * 10
    pad[0] = 1
    pad[1] = 2
    pad[2] = 3
    pad[3] = 4
    pad[4] = 5
    pad[5] = 6
    pad[6] = 7
    pad[7] = 8
    pad[8] = 9
    pad[9] = 10
    pad[0] = 11
    pad[1] = 12
    pad[2] = 13
    pad[3] = 14
    pad[4] = 15
    pad[5] = 16
    pad[6] = 17
    pad[7] = 18
    pad[8] = 19
    pad[9] = 20
    pad[0] = 21
    pad[1] = 22
    pad[2] = 23
    pad[3] = 24
    pad[4] = 25
    pad[5] = 26
    pad[6] = 27
    pad[7] = 28
    pad[8] = 29
    pad[9] = 30
    for _ in range(400):
        try:
            keep.append(bytearray(64 * 1024))
        except MemoryError as e:  # noqa: F841
            try:  # noqa: SIM105 (the except ... as blocks are the pattern under test)
                keep.append(bytearray(16 * 1024))
            except MemoryError as e2:  # noqa: F841
                pass
    return str(len(keep)).encode()


def _numpy() -> bytes:
    import numpy as np

    grid = np.ones((2000, 2000))  # 32 MB of array data in one call
    return str(float((grid * 2).sum())).encode()


def _pillow() -> bytes:
    from PIL import Image

    image = Image.new("RGB", (2000, 2000), "white")  # 16 MB of pixels, malloc'd by Pillow
    return str(image.getpixel((0, 0))).encode()


def _lxml() -> bytes:
    from lxml import etree

    xml = b"<r>" + b"<i>text</i>" * 100_000 + b"</r>"  # a tree of ~30 MB malloc'd by libxml2
    return str(len(etree.fromstring(xml))).encode()


def _sqlite() -> bytes:
    import sqlite3

    db = sqlite3.connect(":memory:")  # sqlite steps without the GIL
    db.execute("create table t(a integer, b text)")
    for _ in range(100):
        db.executemany("insert into t values (?, ?)", ((i, "z" * 100) for i in range(5000)))
    return str(db.execute("select count(*) from t").fetchone()[0]).encode()


CASES = {
    "numpy": _numpy,
    "pillow": _pillow,
    "lxml": _lxml,
    "sqlite": _sqlite,
    "orjson-dumps": _orjson_dumps,
    "orjson-loads": _orjson_loads,
    "pydantic-dump-json": _pydantic_dump_json,
    "pydantic-model-dump-json": _pydantic_model_dump_json,
    "msgpack": _msgpack,
    "json": _json,
    "zlib": _zlib,
    "swallow": _swallow,
}


async def _text(send: Any, status: int, body: bytes, more: bool = False) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    name = scope["path"].strip("/")
    if name == "ok":
        await _text(send, 200, b"ok")
    elif name == "stream":
        # Trips after the response started: the connection must be aborted.
        await _text(send, 200, b"first chunk\n", more=True)
        body = _json()
        await send({"type": "http.response.body", "body": body, "more_body": False})
    elif name == "thread-sqlite":
        # A worker thread that allocates through a C library without the GIL.
        import asyncio

        await _text(send, 200, await asyncio.to_thread(_sqlite))
    elif name == "executor":
        # run_in_executor(None, ...): nea's server runs it in the request's context.
        import asyncio

        body = await asyncio.get_running_loop().run_in_executor(None, _json)
        await _text(send, 200, body)
    else:
        await _text(send, 200, CASES[name]())


def _fastapi() -> Any:
    from fastapi import FastAPI
    from pydantic import BaseModel

    api = FastAPI()

    class Row(BaseModel):
        id: int
        name: str
        tags: list[str]
        score: float

    @api.get("/ok")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}

    @api.get("/model", response_model=list[Row])
    async def model() -> list[dict[str, Any]]:
        return _rows()  # validated and serialised through pydantic-core: past the budget

    @api.get("/sync")
    def sync() -> dict[str, int]:  # runs in the thread pool
        keep = [bytearray(1 << 20) for _ in range(400)]  # 400 MiB unless stopped
        return {"kept": len(keep)}

    return api


fastapi_app = _fastapi()


def _django() -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=True,
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="corpus",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _django_view(request: Any) -> Any:
    from django.http import HttpResponse

    rows = [{"id": i, "payload": f"{i:0100}"} for i in range(6000)]
    table = [rows[:] for _ in range(80)]  # a view that builds more than it may
    return HttpResponse(str(len(table)))


def _django_ok(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(b"ok")


def _urlpatterns() -> list[Any]:
    from django.urls import path

    return [path("rows", _django_view), path("ok", _django_ok)]


urlpatterns = _urlpatterns()
django_app = _django()

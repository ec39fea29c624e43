"""An ordinary FastAPI app whose endpoints allocate what the query string asks for.

Nothing in it knows about nea: served by nea each request runs inside its budget, and
an endpoint that asks for more than the budget fails alone with
``500 Internal Server Error: Out of Memory`` while the other requests carry on. The
``def`` endpoint runs in FastAPI's thread pool, the ``async def`` one on the event
loop; both are metered, because the thread pool copies the request's context.

- ``GET /alloc?kb=100``       ``async def``: allocates 100 kb (100 000 bytes)
- ``GET /alloc-sync?kb=100``  plain ``def``: the same, in a worker thread
- ``GET /``                   a small JSON answer

Run it with either of::

    nea --app-dir examples fastapi_app:app --budget 32MiB
    uvicorn --app-dir examples fastapi_app:app
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query

# Decimal kb, like the oom example.
KB_BYTES = 1000
# 1 TB: a sane upper bound so a typo cannot ask the allocator for an absurd size.
MAX_KB = 1_000_000_000

app = FastAPI(title="nea FastAPI example")

KbQuery = Annotated[int, Query(ge=0, le=MAX_KB, description="kb (1000 bytes) to allocate")]


@app.get("/")
async def index() -> dict[str, str]:
    return {"hello": "nea"}


@app.get("/alloc")
async def alloc(kb: KbQuery) -> dict[str, int | str]:
    memory = bytearray(kb * KB_BYTES)
    return {"allocated_kb": len(memory) // KB_BYTES, "endpoint": "async def"}


@app.get("/alloc-sync")
def alloc_sync(kb: KbQuery) -> dict[str, int | str]:
    memory = bytearray(kb * KB_BYTES)
    return {"allocated_kb": len(memory) // KB_BYTES, "endpoint": "def"}

"""GET /events: the event bus as server-sent events, for the operator's page.

Each client gets a bounded queue fed from the publishing thread with one non-blocking
call; a slow client loses events (and is told so), it never slows an inspection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from edge_runtime.api.deps import RuntimeDep
from edge_runtime.services.events import Event

router = APIRouter(tags=["system"])
QUEUE = 256
KEEPALIVE_S = 15.0


def _offer(queue: asyncio.Queue, event: Event | None) -> None:
    try:
        queue.put_nowait(event)
    except asyncio.QueueFull:  # a stalled client: drop, and say so once the queue drains
        queue.dropped = getattr(queue, "dropped", 0) + 1


def sse(event: Event) -> str:
    payload = json.dumps(event.payload | {"time": event.time}, default=str)
    return f"event: {event.topic}\ndata: {payload}\n\n"


@router.get("/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "inspection, job, model, product and review "
                                            "events as they happen"}})
async def stream(
    request: Request,
    runtime: RuntimeDep,
    topics: Annotated[str | None, Query(max_length=200,
                                        description="comma-separated; all when absent")] = None,
) -> StreamingResponse:
    wanted = {t.strip() for t in topics.split(",")} if topics else None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE)

    def sink(event: Event) -> None:  # runs in the publisher's thread: enqueue only
        if wanted is None or event.topic in wanted:
            loop.call_soon_threadsafe(_offer, queue, event)

    unsubscribe = runtime.events.subscribe(sink)

    async def body():
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                dropped = getattr(queue, "dropped", 0)
                if dropped:
                    queue.dropped = 0
                    yield f"event: dropped\ndata: {json.dumps({'count': dropped})}\n\n"
                yield sse(event)
        finally:
            unsubscribe()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

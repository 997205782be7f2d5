"""``http.max_in_flight``: beyond it a request is refused at once with a 503 problem, probes aside."""

from __future__ import annotations

import asyncio

import httpx
from starlette.types import Receive, Scope, Send

from http_api.lifecycle import Lifecycle
from http_api.middleware import RequestContextMiddleware
from tests.http.test_errors_and_request_ids import assert_problem


class _Stalled:
    """An ASGI app whose requests wait for ``release``; ``/livez`` answers at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/livez":
            self.entered += 1
            await self.release.wait()
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


async def test_beyond_max_in_flight_a_request_gets_503_at_once_and_the_probes_still_answer() -> None:
    inner = _Stalled()
    app = RequestContextMiddleware(inner, lifecycle=Lifecycle(), retry_after_s=2, max_in_flight=2)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hex.test") as client:
        running = [asyncio.create_task(client.get(f"/work/{i}")) for i in range(2)]
        for _ in range(100):
            if inner.entered == 2:
                break
            await asyncio.sleep(0.01)
        assert app.in_flight == 2

        refused = await client.get("/work/3", headers={"X-Request-ID": "over-1"})
        body = assert_problem(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "2"
        assert refused.headers["x-request-id"] == body["request_id"] == "over-1"
        assert "connection" not in refused.headers  # overloaded, not leaving: keep the connection
        assert inner.entered == 2  # the refused request never reached the app
        live = await client.get("/livez")
        assert live.status_code == 200

        inner.release.set()
        assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]
        assert app.in_flight == 0
        assert (await client.get("/work/4")).status_code == 200  # room again

"""The HTTP face of the search engine (FastAPI, as ``swift deploy``): the only module of the service that speaks HTTP.

Routes:

* ``POST /search`` ``{"query": str, "k": int?}`` -> ``{"query", "k", "results": [{"rank", "image", "image_url",
  "identifier", "score", "reason"}], "index": {...}, "setting": {...}, "model": {...}}``;
* ``GET /images/{n}``: the JPEG thumbnail of the index's image number ``n`` (:mod:`swift_ssid.service.images`);
* ``GET /health``: ``{"status": "ok", "model": {...}, "index": {...}, "batches": {...}}``;
* ``GET /``: the search page (``page.html``, package data).

Every error is a JSON ``{"error": "<one line>"}``: 400 a body that is not UTF-8 JSON, 413 a body over
:data:`MAX_BODY_BYTES`, 422 a wrong field, 404 an unknown image or route, 500 a failed search (the server keeps
serving).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from swift_ssid.core.errors import UserError
from swift_ssid.service.batching import Batcher
from swift_ssid.service.engine import SearchResult, check_query
from swift_ssid.service.images import ImageStore

MAX_BODY_BYTES = 16 * 1024
"""The largest ``/search`` body accepted (a query is at most a few thousand characters)."""
FIELDS = ("query", "k")


class BadRequest(Exception):
    """A request the server refuses: its status and the one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def parse_search(body: bytes, default_k: int, max_k: int) -> tuple[str, int]:
    """The query and K of a ``/search`` body.

    Raises:
        BadRequest: 413 too large, 400 not UTF-8 / not a JSON object, 422 a missing, unknown or wrong field.
    """
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, f"body of {len(body)} bytes, at most {MAX_BODY_BYTES} are accepted; send a shorter query")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadRequest(400, f"body is not UTF-8 ({e.reason} at byte {e.start}); send UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise BadRequest(400, f'body is not JSON ({e.msg} at position {e.pos}); send {{"query": "..."}}') from None
    if not isinstance(data, dict):
        raise BadRequest(400, f'body is a JSON {type(data).__name__}, not an object; send {{"query": "..."}}')
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(422, f"unknown field(s) {unknown}; a search takes only {list(FIELDS)}")
    if "query" not in data:
        raise BadRequest(422, 'missing field \'query\'; send {"query": "a tabby cat on a sofa"}')
    try:
        query = check_query(data["query"])
    except UserError as e:
        raise BadRequest(422, str(e)) from None
    k = data.get("k", default_k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise BadRequest(422, f"k must be an integer from 1 to {max_k}, got {k!r:.40}")
    return query, k


def create_app(
    batcher: Batcher, store: ImageStore, info: dict[str, Any], default_k: int = 10, max_k: int = 50
) -> FastAPI:
    """The app: searches go through ``batcher``, thumbnails come from ``store``, ``info`` describes model and index.

    Args:
        batcher: the batching queue in front of the engine.
        store: the index's images.
        info: ``{"model", "adapters", "template", "index": {...}}`` (:attr:`SearchEngine.info`).
        default_k: K when a request names none.
        max_k: the largest K accepted.
    """
    app = FastAPI(title="swift_ssid search", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("swift_ssid.service").joinpath("page.html").read_text(encoding="utf-8")
    model = {key: info.get(key) for key in ("model", "adapters", "template")}

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, f"{request.url.path}: invalid request")

    @app.get("/", response_class=HTMLResponse)
    async def _page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def _health() -> dict[str, Any]:
        sizes = batcher.batch_sizes
        return {
            "status": "ok",
            "model": model,
            "index": info.get("index"),
            "k": {"default": default_k, "max": max_k},
            "batches": {"count": len(sizes), "searches": sum(sizes), "largest": max(sizes, default=0)},
        }

    @app.post("/search")
    async def _search(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return error(413, f"body of {declared} bytes, at most {MAX_BODY_BYTES} are accepted; send a shorter query")
        try:
            query, k = parse_search(await request.body(), default_k, max_k)
        except BadRequest as e:
            return error(e.status, str(e))
        try:
            result: SearchResult = await asyncio.wrap_future(batcher.submit(query, k))
        except Exception as e:  # the model failed: this request gets a 500, the server keeps serving
            return error(500, f"search failed: {type(e).__name__}: {e}")
        results = [{**hit.to_dict(), "image_url": store.url(hit.image)} for hit in result.hits]
        return JSONResponse(
            {"query": query, "k": k, "results": results, "index": info.get("index"), "setting": result.setting,
             "model": model}
        )  # fmt: skip

    @app.get("/images/{key}")
    def _image(key: str) -> Response:
        data = store.thumbnail(key)
        if data is None:
            return error(404, f"no image {key[:40]!r} in the index; use the image_url of a search result")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, on_ready: Any = None) -> None:
    """Serve ``app`` with uvicorn until Ctrl-C / SIGTERM, then return (uvicorn's graceful shutdown).

    Args:
        app: the app.
        host: the address to bind (127.0.0.1: this machine only).
        port: the port.
        on_ready: called with no argument once the socket listens (to print the URL).
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    if on_ready is not None:

        async def _startup(sockets: Any = None) -> None:
            await type(server).startup(server, sockets)
            if server.started:
                on_ready()

        server.startup = _startup  # type: ignore[method-assign]

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # uvicorn shuts down gracefully on SIGINT / SIGTERM, then re-raises the signal under the handler found before.
    previous = (
        signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    except SystemExit:  # uvicorn exits when it cannot bind
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise OSError(f"could not listen on {host}:{port} (in use? see the message above); pass another --port")

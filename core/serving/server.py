"""``crs serve RUN_DIR``: a JSON API and one web page over a trained pipeline (FastAPI + uvicorn).

Endpoints:

- ``GET /v1/health``: ``{"status": "ok", "pipeline", "corpus", "items", "sessions", ...}``;
- ``POST /v1/sessions``: a new conversation, ``201 {"session_id", "idle_timeout_s"}``; ``503`` when
  ``max_sessions`` are open (idle ones are dropped first);
- ``POST /v1/sessions/{id}/turns`` with ``{"text": "...", "top_n": 5, "reply": true}``: the answer
  (``reply``, ``recommendations`` [{item_id, name, score}], ``why``, ``linked``); ``404`` for an
  unknown or expired session, ``422`` for an unusable utterance;
- ``DELETE /v1/sessions/{id}``;
- ``GET /``: the chat page (``static/index.html``, ``app.js``, ``app.css``).

Sessions live in memory: one idle longer than ``idle_timeout_s`` is dropped, and at most
``max_sessions`` exist.  Requests are bounded: a body over ``max_body_bytes`` gets ``413``
before the application reads it (its declared length, or counted as it streams in), and an utterance is
cleaned and bounded by :func:`crs.serving.session.clean_utterance` (``422`` beyond
``max_chars``).  Invalid JSON or UTF-8 gets FastAPI's ``422``.  The page writes every text
with ``textContent`` (never as HTML) and is served with a Content-Security-Policy that
allows its own script only, so markup typed or generated shows as text.

Concurrency: the turn endpoint is a plain ``def``, which FastAPI runs in its thread pool,
so a model call never blocks the event loop (health checks and other sessions' requests
are accepted meanwhile).  Model calls hold the engine's lock (one per model: its
graph-encoder cache is shared state), and a turn also holds its session's lock, so two
requests of one session cannot interleave their turns.  Torch work is small per turn
(one sample), so serialising model calls costs little next to the safety it buys.
"""

import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .limits import MAX_CHARS, MAX_TOP_N, REPLY_TOKENS, TOP_N
from .session import ChatEngine, ChatSession, InputError

STATIC = Path(__file__).parent / "static"
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; " \
      "base-uri 'none'; frame-ancestors 'none'"


@dataclass
class ServeSettings:
    """The server's limits (``crs serve`` flags of the same names)."""

    max_sessions: int = 100
    idle_timeout_s: float = 1800.0
    max_chars: int = MAX_CHARS
    max_body_bytes: int = 16_384
    reply_tokens: int = REPLY_TOKENS


class SessionStore:
    """Open sessions by id, each with its lock and the time it was last used."""

    def __init__(self, engine: ChatEngine, settings: ServeSettings, clock: Callable[[], float] = time.monotonic):
        self.engine, self.settings, self.clock = engine, settings, clock
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[ChatSession, threading.Lock]] = {}
        self._used: dict[str, float] = {}

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def _expire(self) -> None:
        cutoff = self.clock() - self.settings.idle_timeout_s
        for sid in [sid for sid, used in self._used.items() if used < cutoff]:
            self._sessions.pop(sid, None)
            self._used.pop(sid, None)

    def create(self) -> str | None:
        """A new session's id, or None when ``max_sessions`` are open."""
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.settings.max_sessions:
                return None
            sid = secrets.token_urlsafe(16)
            self._sessions[sid] = (ChatSession(self.engine, sid), threading.Lock())
            self._used[sid] = self.clock()
            return sid

    def get(self, sid: str) -> tuple[ChatSession, threading.Lock] | None:
        with self._lock:
            self._expire()
            entry = self._sessions.get(sid)
            if entry is not None:
                self._used[sid] = self.clock()
            return entry

    def delete(self, sid: str) -> bool:
        with self._lock:
            self._used.pop(sid, None)
            return self._sessions.pop(sid, None) is not None


class BodyLimit:
    """ASGI middleware: ``413`` for a request body over `limit` bytes, declared or streamed."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        # Read the whole body first (it is small: at most `limit` bytes), so that one streamed without a
        # declared length is refused with 413 before the application parses any of it.
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await _too_large(send, self.limit)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed_receive() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed_receive, send)


async def _too_large(send: Callable, limit: int) -> None:
    import json

    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(engine: ChatEngine, settings: ServeSettings | None = None,
               clock: Callable[[], float] = time.monotonic) -> Any:
    """The FastAPI application over `engine` (``crs serve`` runs it with uvicorn)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse
    from pydantic import BaseModel, Field

    settings = settings or ServeSettings()
    store = SessionStore(engine, settings, clock)
    pipeline = engine.pipeline

    class TurnIn(BaseModel):
        # The hard bound on what is parsed; clean_utterance applies max_chars to the cleaned text.
        text: str = Field(max_length=4 * settings.max_chars)
        top_n: int = Field(default=TOP_N, ge=1, le=MAX_TOP_N)
        reply: bool = True

    app = FastAPI(title="crs serve", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.settings = store, settings

    @app.middleware("http")
    async def headers(request: Any, call_next: Callable) -> Any:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok", "pipeline": pipeline.spec.name, "corpus": pipeline.corpus.name,
                "items": len(engine.item_names), "recommender": engine.has_recommender,
                "generator": engine.has_generator, "sessions": len(store),
                "max_sessions": settings.max_sessions, "idle_timeout_s": settings.idle_timeout_s,
                "max_chars": settings.max_chars}

    @app.post("/v1/sessions", status_code=201)
    def new_session() -> dict:
        sid = store.create()
        if sid is None:
            raise HTTPException(503, f"{settings.max_sessions} sessions are open, the most this server keeps; "
                                     "try again when one has been idle for "
                                     f"{settings.idle_timeout_s:g} s", headers={"Retry-After": "60"})
        return {"session_id": sid, "idle_timeout_s": settings.idle_timeout_s}

    @app.post("/v1/sessions/{session_id}/turns")
    def turn(session_id: str, body: TurnIn) -> dict:  # a plain def: FastAPI runs it in its thread pool
        entry = store.get(session_id)
        if entry is None:
            raise HTTPException(404, "no such session (unknown, deleted or idle too long): create one with "
                                     "POST /v1/sessions")
        session, lock = entry
        try:
            with lock:
                answer = session.say(body.text, top_n=body.top_n, reply=body.reply,
                                     reply_tokens=settings.reply_tokens, max_chars=settings.max_chars)
        except InputError as err:
            raise HTTPException(422, str(err)) from None
        return {"session_id": session_id, "turn": len(session.turns), **asdict(answer)}

    @app.delete("/v1/sessions/{session_id}", status_code=204)
    def end_session(session_id: str) -> None:
        if not store.delete(session_id):
            raise HTTPException(404, "no such session")

    @app.get("/", include_in_schema=False)
    def page() -> Any:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Any:
        files = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
        if name not in files:
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=files[name])

    return BodyLimit(app, settings.max_body_bytes) if settings.max_body_bytes > 0 else app


def serve_main(run_dir: str, *, host: str = "127.0.0.1", port: int = 8000,
               settings: ServeSettings | None = None) -> int:
    """Load the run and serve it until interrupted."""
    import sys

    import uvicorn

    from .chat import load_engine

    engine = load_engine(run_dir)
    app = create_app(engine, settings)
    print(f"[crs] serving {run_dir} on http://{host}:{port}/ (JSON API under /v1; Ctrl-C stops)",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


class BackgroundServer:
    """An app (:func:`create_app`) served by uvicorn on a free localhost port in a background thread, with a
    JSON ``post`` client: for tests and benchmarks (``with BackgroundServer(app) as server: server.post(...)``)."""

    def __init__(self, app: Any):
        import socket

        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 20 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def post(self, path: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
        """(status, JSON body) of a POST to `path`; an HTTP error status is returned, not raised."""
        import json
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

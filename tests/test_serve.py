"""`crs serve`: the JSON API over a tiny trained KGSF run on the demo corpus.

Hostile input (control characters, 1 MB bodies, invalid UTF-8, markup) gets a 4xx or is
kept as text, never a 500; sessions are capped and expire when idle; 16 sessions talking
at once through a real uvicorn server each get the recommendations of their own context.

:func:`tiny_kgsf_run` (also used by tests/test_chat.py and tests/test_serve_browser.py)
trains the run once per test process.
"""
from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

# The demo world at toy size (the knowledge sources must be told the same sizes as the dataset) and KGSF at
# dimension 16: about 10-20 s of training on one core.
_WORLD = {"n_items": 60, "n_people": 30}
TINY_KGSF = ["preset=kgsf", "data=demo", "seed=5", "threads=1", "data.n_users=30", "data.n_train=150",
             "data.n_valid=15", "data.n_test=15", *(f"data.{k}={v}" for k, v in _WORLD.items()),
             *(f"knowledge.{src}.{k}={v}" for src in ("entity_kg", "word_kg", "reviews", "metadata")
               for k, v in _WORLD.items()),
             "stages.0.epochs=1", "stages.1.epochs=3", "stages.2.epochs=1", "evaluation.max_samples=4",
             *(f"model.{slot}.dim=16" for slot in ("word_encoder", "entity_encoder", "word_user", "entity_user",
                                                   "user", "recommender", "generator")),
             "model.mim.word_dim=16", "model.mim.entity_dim=16", "model.generator.word_dim=16",
             "model.generator.entity_dim=16", "model.generator.ffn_dim=32", "model.generator.layers=1",
             "model.generator.heads=2"]
_TRAINED: dict[str, Path] = {}
_ENGINES: dict[str, object] = {}


def tiny_kgsf_run(tmp_path_factory) -> Path:
    """The folder of a finished tiny KGSF run (trained once per test process)."""
    import torch

    from crs.runner import run

    if "kgsf" not in _TRAINED:
        run_dir = tmp_path_factory.mktemp("serve") / "kgsf-tiny"
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the suite's per-test fixture is not active in module fixtures
        try:
            assert run(None, TINY_KGSF, run_dir=str(run_dir), progress=False) == 0
        finally:
            torch.set_num_threads(threads)
        _TRAINED["kgsf"] = run_dir
    return _TRAINED["kgsf"]


def tiny_kgsf_engine(tmp_path_factory):
    """A ChatEngine over :func:`tiny_kgsf_run` (loaded once per test process)."""
    from crs.serving.chat import load_engine

    if "kgsf" not in _ENGINES:
        _ENGINES["kgsf"] = load_engine(str(tiny_kgsf_run(tmp_path_factory)))
    return _ENGINES["kgsf"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_kgsf_engine(tmp_path_factory)


class Clock:
    """A settable clock for the idle timeout."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(engine, clock):
    from fastapi.testclient import TestClient

    from crs.serving.server import ServeSettings, create_app

    app = create_app(engine, ServeSettings(max_sessions=3, idle_timeout_s=60, max_chars=200,
                                           max_body_bytes=4096), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _session(client) -> str:
    response = client.post("/v1/sessions")
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


def _turn(client, sid: str, text, **extra):
    return client.post(f"/v1/sessions/{sid}/turns", json={"text": text, **extra})


# ------------------------------------------------------------------ the API
def test_health_names_the_pipeline_and_counts_sessions(client):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["pipeline"] == "kgsf" and health["corpus"] == "demo"
    assert health["items"] == 60 and health["recommender"] and health["generator"]
    assert health["sessions"] == 0
    _session(client)
    assert client.get("/v1/health").json()["sessions"] == 1


def test_a_turn_answers_with_a_reply_ranked_items_and_why(client, engine):
    sid = _session(client)
    first = engine.item_names[0]
    response = _turn(client, sid, f"I loved {first}, and I like horror", top_n=7)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer["reply"], str) and "@" not in answer["reply"]  # placeholders shown as names
    recs = answer["recommendations"]
    assert len(recs) == 7 and all(set(r) == {"item_id", "name", "score"} for r in recs)
    assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
    assert first not in [r["name"] for r in recs]  # named in the conversation: excluded (the fresh rule)
    assert first in answer["linked"] and "horror" in answer["linked"]
    why = answer["why"]
    assert why["top_item"] == recs[0]["name"] and first in why["excluded"]
    assert {e["name"] for e in why["evidence"]} >= {first, "horror"}
    without_reply = _turn(client, sid, "anything else?", reply=False).json()
    # user, bot (when it said something), user; no bot turn without a reply
    assert without_reply["reply"] is None and without_reply["turn"] == 2 + bool(answer["reply"].strip())


def test_unknown_session_is_404_and_delete_ends_one(client):
    assert _turn(client, "no-such-session", "hello").status_code == 404
    sid = _session(client)
    assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    assert _turn(client, sid, "hello").status_code == 404
    assert client.delete(f"/v1/sessions/{sid}").status_code == 404


def test_session_cap_then_idle_timeout_frees_room(client, clock):
    ids = [_session(client) for _ in range(3)]
    full = client.post("/v1/sessions")
    assert full.status_code == 503 and "3 sessions" in full.json()["detail"]
    clock.now += 30
    assert _turn(client, ids[0], "something funny").status_code == 200  # used: its idle time starts again
    clock.now += 45  # ids[1] and ids[2] idle 75 s > 60 s; ids[0] 45 s
    assert client.get("/v1/health").json()["sessions"] == 1
    assert _turn(client, ids[1], "hello").status_code == 404
    assert _turn(client, ids[0], "and scary").status_code == 200
    assert client.post("/v1/sessions").status_code == 201


@pytest.mark.parametrize("text, status", [
    ("", 422), ("   \n\t ", 422), ("\x00\x01\x1b\x7f", 422), ("x" * 201, 422), ("x" * 3000, 422),
    ("x" * 10_000, 413)])  # over max_body_bytes: refused before parsing
def test_unusable_utterances_are_422_with_a_reason(client, text, status):
    sid = _session(client)
    response = _turn(client, sid, text)
    assert response.status_code == status
    assert response.json()["detail"]


def test_control_characters_are_dropped_and_markup_is_kept_as_text(client):
    sid = _session(client)
    hostile = "<script>alert(1)</script>\x00\x07 I like <b>horror</b>\u2028!"
    response = _turn(client, sid, hostile)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "horror" in response.json()["linked"]
    page = client.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "innerHTML" not in client.get("/static/app.js").text  # the page writes text, never HTML


@pytest.mark.parametrize("body, headers", [
    (b'{"text": "\xff\xfe horror"}', {"content-type": "application/json"}),  # invalid UTF-8
    (b'{"text": ', {"content-type": "application/json"}),  # cut-off JSON
    (b'{"text": 42}', {"content-type": "application/json"}),
    (b'{"text": "horror", "top_n": 0}', {"content-type": "application/json"}),
    (b'{"text": "horror", "top_n": 51}', {"content-type": "application/json"}),
    (b'[1, 2]', {"content-type": "application/json"}),
    (b"text=horror", {"content-type": "application/x-www-form-urlencoded"}),
])
def test_malformed_bodies_are_4xx(client, body, headers):
    sid = _session(client)
    response = client.post(f"/v1/sessions/{sid}/turns", content=body, headers=headers)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)


def test_a_megabyte_body_is_413_declared_or_streamed(client):
    sid = _session(client)
    big = json.dumps({"text": "x" * (1 << 20)}).encode()
    declared = client.post(f"/v1/sessions/{sid}/turns", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413

    def chunks():  # no Content-Length: counted while it streams in
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    streamed = client.post(f"/v1/sessions/{sid}/turns", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert _turn(client, sid, "still fine: horror").status_code == 200


def test_random_bytes_never_make_a_500(client):
    sid = _session(client)
    rng = random.Random(0)
    for _ in range(8):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        response = client.post(f"/v1/sessions/{sid}/turns", content=body, headers={"content-type": "application/json"})
        assert response.status_code < 500
        text = "".join(chr(rng.choice([rng.randrange(32), rng.randrange(32, 0x2FFF)])) for _ in range(150))
        assert _turn(client, sid, text).status_code in (200, 422)


def test_serve_binds_to_localhost_by_default():
    from crs.cli import build_parser

    args = build_parser().parse_args(["serve", "runs/x"])
    assert args.host == "127.0.0.1" and args.port == 8000


# ------------------------------------------------------------ concurrency
def _tastes(engine) -> list[str]:
    """16 different tastes the demo world has: a genre each, and a person for the first twelve."""
    from crs.plugins.demo import lexicon

    people = [n for n in engine.entity_graph.nodes if n.startswith("person:")]
    genres = [g.name for g in lexicon.GENRES]
    tastes = []
    for i in range(16):
        person = f" with {people[i * 2].removeprefix('person:')}" if i < 12 else ""
        tastes.append(f"I want a {genres[i % len(genres)]} movie{person}")
    return tastes


@pytest.mark.slow  # 32 turns with replies: about 5 s on a free core
def test_sixteen_parallel_sessions_each_get_their_own_recommendations(engine):
    from crs.serving.server import BackgroundServer, ServeSettings, create_app

    tastes = _tastes(engine)
    follow_up = "what else would I like?"
    with BackgroundServer(create_app(engine, ServeSettings(max_sessions=32, reply_tokens=8))) as server:
        ids = [server.post("/v1/sessions")[1]["session_id"] for _ in tastes]

        def talk(i: int) -> list[dict]:
            answers = []
            for text in (tastes[i], follow_up):
                status, answer = server.post(f"/v1/sessions/{ids[i]}/turns", {"text": text, "top_n": 5})
                assert status == 200, answer
                answers.append(answer)
            return answers

        barrier_start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(talk, range(16)))
        elapsed = time.perf_counter() - barrier_start
    print(f"16 sessions x 2 turns in {elapsed:.2f} s")
    # Each session's answers are what the same two turns give when told alone, one session at a time.
    for taste, answers in zip(tastes, results):
        alone = engine.session()
        for text, answer in zip((taste, follow_up), answers):
            expected = alone.say(text, top_n=5, reply_tokens=8)
            assert answer["recommendations"] == [vars(r) for r in expected.recommendations]
            assert answer["reply"] == expected.reply
        # /why names only what this session said: its own genre and person, nobody else's
        said = {e["name"] for e in answers[-1]["why"]["evidence"] if e["kind"] == "entity"}
        assert said and said <= set(answers[0]["linked"]), (taste, said)
    tops = {tuple(r["item_id"] for r in answers[-1]["recommendations"]) for answers in results}
    assert len(tops) >= 12  # different tastes, different rankings

"""Benchmark: per-turn latency of `crs chat` / `crs serve` on a finished run, and throughput under load.

The utterances are the seeker turns of the run's own test conversations, typed one after
another into a session (so the context grows as in a real conversation; a session is reset
after each conversation).  Measured, each over ``--turns`` turns after a warm-up:

- ``rec``: recommendations only (``ChatSession.say(reply=False, why=False)``);
- ``rec+why``: the same with the /why leave-one-out explanation;
- ``rec+reply``: recommendations and a ``--reply-tokens`` reply (no /why);
- where the time of a turn goes: sample building (linking + ``next_turn_sample``), collation,
  the scores pass, /why, generation;
- ``serve``: ``--sessions`` clients at once against a real uvicorn server on localhost, each
  turn a full API call (rec + reply + /why, JSON): turns per second, client-side p50/p95, errors.

    python benchmarks/bench_serve.py runs/kgsf-demo
    python benchmarks/bench_serve.py runs/kgsf-demo --turns 200 --json out.json

Set ``OMP_NUM_THREADS`` / ``--threads`` to choose torch's threads (default 1: the server serialises
model calls, so one request's intra-op threads compete with nothing but the other cores' work).
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench_report import finish  # same folder: run as python benchmarks/bench_serve.py


def percentiles(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    at = lambda q: ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]  # noqa: E731
    return {"p50_ms": round(at(0.5), 2), "p95_ms": round(at(0.95), 2), "mean_ms": round(statistics.mean(ms), 2),
            "turns": len(ms)}


def utterances(engine, limit: int) -> list[list[str]]:
    """The seeker turns of the run's test conversations (then valid, train), one list per conversation."""
    from crs.data.schema import SEEKER

    convs = []
    total = 0
    for split in ("test", "valid", "train"):
        for conv in engine.pipeline.corpus.splits.get(split, []):
            said = [t.text for t in conv.turns if t.role == SEEKER and t.text.strip()][:6]
            if said:
                convs.append(said)
                total += len(said)
            if total >= limit:
                return convs
    return convs


def timed_turns(engine, convs: list[list[str]], turns: int, cpu: list[float] | None = None, **say) -> list[float]:
    """Wall seconds of each turn; `cpu` gets the process CPU seconds of each (what a free core would take)."""
    times = []
    session = engine.session()
    for conv in convs:
        session.reset()
        for text in conv:
            start, start_cpu = time.perf_counter(), time.process_time()
            session.say(text[:400], **say)
            times.append(time.perf_counter() - start)
            if cpu is not None:
                cpu.append(time.process_time() - start_cpu)
            if len(times) >= turns:
                return times
    return times


def measured(engine, convs: list[list[str]], turns: int, **say) -> dict:
    cpu: list[float] = []
    wall = percentiles(timed_turns(engine, convs, turns, cpu, **say))
    on_cpu = percentiles(cpu)
    return {**wall, "cpu_p50_ms": on_cpu["p50_ms"], "cpu_p95_ms": on_cpu["p95_ms"]}


def breakdown(engine, convs: list[list[str]], turns: int, reply_tokens: int) -> dict:
    """Mean milliseconds per turn of each step of a turn with reply and /why."""
    import torch

    from crs.data.schema import SEEKER

    parts = {"link+sample": 0.0, "collate": 0.0, "scores": 0.0, "why": 0.0, "reply": 0.0}
    n = 0
    for conv in convs:
        history = []
        for text in conv:
            t0 = time.perf_counter()
            history.append(engine.finder.turn(len(history), SEEKER, text[:400]))
            sample = engine.sample(history)
            t1 = time.perf_counter()
            batch = engine._collate([sample])
            t2 = time.perf_counter()
            with torch.no_grad():
                scores = engine.model(batch, ["scores"])["scores"][0]
                t3 = time.perf_counter()
                recs = engine._top(scores, sample.context_items, 5)
                engine._why(sample, scores, recs[0])
                t4 = time.perf_counter()
                if engine.has_generator:
                    engine._generate(batch, reply_tokens)
                t5 = time.perf_counter()
            for key, took in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                parts[key] += took
            n += 1
            if n >= turns:
                return {k: round(v / n * 1000, 2) for k, v in parts.items()}
    return {k: round(v / max(n, 1) * 1000, 2) for k, v in parts.items()}


def load_test(engine, convs: list[list[str]], sessions: int, turns_each: int, reply_tokens: int) -> dict:
    from crs.serving.server import BackgroundServer, ServeSettings, create_app

    app = create_app(engine, ServeSettings(max_sessions=sessions * 2, reply_tokens=reply_tokens))
    with BackgroundServer(app) as server:
        return _load(server, convs, sessions, turns_each)


def _load(server, convs: list[list[str]], sessions: int, turns_each: int) -> dict:
    """`sessions` clients at once, `turns_each` turns each, against `server` (a BackgroundServer)."""
    post = lambda path, body=None: server.post(path, body, timeout=120)  # noqa: E731
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(i: int) -> None:
        status, created = post("/v1/sessions")
        if status != 201:
            with lock:
                errors[0] += turns_each
            return
        sid = created["session_id"]
        texts = [t for conv in convs[i::sessions] for t in conv] or [t for conv in convs for t in conv]
        for k in range(turns_each):
            start = time.perf_counter()
            status, _ = post(f"/v1/sessions/{sid}/turns", {"text": texts[k % len(texts)][:400]})
            took = time.perf_counter() - start
            with lock:
                latencies.append(took)
                errors[0] += status != 200

    start = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(client, range(sessions)))
    wall = time.perf_counter() - start
    return {"sessions": sessions, "turns": len(latencies), "errors": errors[0], "wall_s": round(wall, 2),
            "turns_per_s": round(len(latencies) / wall, 2), **percentiles(latencies)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run's folder, e.g. runs/kgsf-demo")
    parser.add_argument("--turns", type=int, default=100, help="timed turns per measurement")
    parser.add_argument("--reply-tokens", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=16, help="concurrent clients of the load test (0: none)")
    parser.add_argument("--turns-per-session", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    from crs.serving.chat import load_engine

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    engine = load_engine(args.run_dir)
    load_s = time.perf_counter() - start
    convs = utterances(engine, args.turns + 20)
    timed_turns(engine, convs, 10)  # warm-up: caches, allocator
    result = {"run_dir": args.run_dir, "pipeline": engine.pipeline.spec.name, "corpus": engine.pipeline.corpus.name,
              "items": len(engine.item_names), "load_s": round(load_s, 2), "threads": args.threads,
              "reply_tokens": args.reply_tokens}
    result["rec"] = measured(engine, convs, args.turns, reply=False, why=False)
    result["rec+why"] = measured(engine, convs, args.turns, reply=False, why=True)
    if engine.has_generator:
        result["rec+reply"] = measured(engine, convs, args.turns, reply=True, why=False,
                                       reply_tokens=args.reply_tokens)
    result["breakdown_ms"] = breakdown(engine, convs, args.turns, args.reply_tokens)
    if args.sessions > 0:
        result["serve"] = load_test(engine, convs, args.sessions, args.turns_per_session, args.reply_tokens)
    lines = [f"{result['pipeline']} on {result['corpus']} ({result['items']} items), {args.run_dir}: "
             f"loaded in {result['load_s']} s, torch threads {args.threads}"]
    for key in ("rec", "rec+why", "rec+reply"):
        if key in result:
            r = result[key]
            lines.append(f"  {key:<10} p50 {r['p50_ms']:8.2f} ms   p95 {r['p95_ms']:8.2f} ms   ({r['turns']} turns; "
                         f"CPU time p50 {r['cpu_p50_ms']:.2f} ms, p95 {r['cpu_p95_ms']:.2f} ms)")
    lines.append("  one turn (rec + /why + reply), mean ms: "
                 + ", ".join(f"{k} {v}" for k, v in result["breakdown_ms"].items()))
    s = result.get("serve")
    if s:
        lines.append(f"  serve: {s['sessions']} sessions x {s['turns'] // s['sessions']} turns (rec + reply + "
                     f"/why over HTTP): {s['turns_per_s']} turns/s, p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, "
                     f"{s['errors']} errors")
    return finish(result, lines, args.json)


if __name__ == "__main__":
    main()

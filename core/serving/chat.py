"""``crs chat RUN_DIR``: talk to a trained pipeline in the terminal (or through a pipe).

Each line typed is a seeker turn (:class:`crs.serving.session.ChatSession`); the answer
is the generated reply (pipelines with a generator), with item placeholders shown as
item names, and the top recommendations with their scores.  Lines starting with ``/``
are commands (:data:`COMMANDS`).

Without a terminal (``crs chat RUN_DIR < script.txt``) each input line is echoed after
the prompt, so the output is a readable transcript.  Everything but the transcript
(loading messages) goes to stderr.
"""
from __future__ import annotations

import sys
from typing import IO, Any

from ..data.schema import RECOMMENDER
from ..errors import CRSError
from .limits import MAX_CHARS, MAX_TOP_N, REPLY_TOKENS, TOP_N
from .session import _CONTROL, Answer, ChatEngine, ChatSession, Why

PROMPT = "you> "
BOT = "bot> "
COMMANDS = {
    "/recs N": f"show N recommendations per turn (1-{MAX_TOP_N}) and re-rank the last turn",
    "/why": "the context entities and words that drove the last ranking, and the items excluded",
    "/reset": "forget the conversation and start a new one",
    "/quit": "leave (end of input does too)",
    "/help": "this list",
}


def format_recommendations(answer: Answer) -> list[str]:
    if not answer.recommendations:
        return []
    return ["  recommended:", *(f"    {i}. {r.name}  ({r.score:.3f})" for i, r in enumerate(answer.recommendations, 1))]


def format_why(why: Why | None) -> list[str]:
    if why is None:
        return ["  (nothing to explain yet: say something first)"]
    lines = [f"  why {why.top_item}:"]
    if not why.evidence:
        lines.append("    (the context names no entity or word the model reads)")
    for e in why.evidence:
        lines.append(f"    {e.kind:<6} {e.name:<32} {e.contribution:+.4f}")
    if why.excluded:
        lines.append(f"  excluded (already named): {', '.join(why.excluded)}")
    lines.append(f"  ({why.note})")
    return lines


def format_answer(answer: Answer) -> list[str]:
    lines = []
    if answer.reply is not None:
        lines.append(BOT + (answer.reply or "(empty reply)"))
    if answer.linked:
        lines.append(f"  understood: {', '.join(answer.linked)}")
    lines += format_recommendations(answer)
    if answer.reply is None and not answer.recommendations:
        lines.append(BOT + "(no recommendation left: every item was named already)")
    return lines


class ChatLoop:
    """Reads lines, answers them, writes the transcript; :meth:`run` returns the exit code."""

    def __init__(self, engine: ChatEngine, *, top_n: int = TOP_N, reply_tokens: int = REPLY_TOKENS,
                 stdin: IO[str] | None = None, stdout: IO[str] | None = None):
        self.engine, self.session = engine, engine.session()
        self.top_n, self.reply_tokens = top_n, reply_tokens
        self.stdin, self.stdout = stdin or sys.stdin, stdout or sys.stdout
        self.interactive = self.stdin.isatty()
        self.asked: list = []  # the turns the last answer ranked for (/recs re-ranks them)

    def write(self, *lines: str) -> None:
        for line in lines:
            self.stdout.write(line + "\n")
        self.stdout.flush()

    def read(self) -> str | None:
        if self.interactive:
            try:
                return input(PROMPT)
            except EOFError:
                return None
        line = self.stdin.readline()
        if not line:
            return None
        line = line.rstrip("\n")
        self.write(PROMPT + _CONTROL.sub("\N{REPLACEMENT CHARACTER}", line))  # the transcript shows what was said
        return line

    def run(self) -> int:
        engine = self.engine
        kinds = " and ".join(k for k, has in (("replies", engine.has_generator),
                                               ("recommendations", engine.has_recommender)) if has)
        self.write(f"crs chat: {engine.pipeline.spec.name} on {engine.pipeline.corpus.name} "
                   f"({len(engine.item_names)} items) answers with {kinds or 'nothing'}. "
                   "Type /help for commands.")
        try:
            while True:
                line = self.read()
                if line is None or line.strip() == "/quit":
                    self.write("bye")
                    return 0
                if line.strip():
                    self.handle(line.strip())
        except KeyboardInterrupt:
            self.write("", "bye")
            return 0

    def handle(self, line: str) -> None:
        if line.startswith("/"):
            self.command(line)
            return
        try:
            self.asked = []
            answer = self.session.say(line, top_n=self.top_n, reply_tokens=self.reply_tokens, max_chars=MAX_CHARS)
        except CRSError as err:
            self.write(f"error: {err}")
            return
        self.asked = self._asked_turns()
        self.write(*format_answer(answer))

    def _asked_turns(self) -> list:
        turns = self.session.turns
        # the turns up to the user's last one: the generated reply, if any, came after the ranking
        last_user = max((i for i, t in enumerate(turns) if t.role != RECOMMENDER), default=-1)
        return turns[:last_user + 1]

    def command(self, line: str) -> None:
        name, _, arg = line.partition(" ")
        if name == "/reset":
            self.session.reset()
            self.asked = []
            self.write("(new conversation)")
        elif name == "/why":
            self.write(*format_why(self.session.last.why if self.session.last else None))
        elif name == "/recs":
            if not arg.strip().isdigit() or not 1 <= int(arg) <= MAX_TOP_N:
                self.write(f"error: /recs takes a number from 1 to {MAX_TOP_N}, e.g. /recs 10")
                return
            self.top_n = int(arg)
            if not self.asked:
                self.write(f"(showing {self.top_n} recommendations from the next turn on)")
                return
            answer, _ = self.engine.answer(self.asked, top_n=self.top_n, reply=False, conv_id=self.session.conv_id)
            self.session.last = answer
            self.write(*format_recommendations(answer))
        elif name == "/help":
            self.write(*(f"  {cmd:<8} {text}" for cmd, text in COMMANDS.items()))
        else:
            self.write(f"error: unknown command '{name}'; type /help for the commands")


def chat_main(run_dir: str, *, top_n: int = TOP_N, reply_tokens: int = REPLY_TOKENS, stdin: Any = None,
              stdout: Any = None) -> int:
    """Load the run, then talk until /quit or the end of input."""
    engine = load_engine(run_dir)
    return ChatLoop(engine, top_n=top_n, reply_tokens=reply_tokens, stdin=stdin, stdout=stdout).run()


def load_engine(run_dir: str) -> ChatEngine:
    """The run's pipeline behind a warmed-up :class:`ChatEngine` (loading messages on stderr)."""
    from .load import load_pipeline

    print(f"[crs] loading {run_dir} ...", file=sys.stderr, flush=True)
    engine = ChatEngine(load_pipeline(run_dir))
    engine.warm_up()
    return engine


__all__ = ["ChatLoop", "ChatSession", "chat_main", "load_engine"]

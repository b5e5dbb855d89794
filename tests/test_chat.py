"""`crs chat`: the session engine (samples as training builds them, item names, exclusions, /why)
and the command itself, piped (`crs chat RUN_DIR < script.txt`) and in a pseudo-terminal (pexpect)."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from test_serve import tiny_kgsf_engine, tiny_kgsf_run

from crs import cli
from crs.data.schema import RECOMMENDER
from crs.serving.chat import ChatLoop
from crs.serving.session import InputError, clean_utterance

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_kgsf_run(tmp_path_factory)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_kgsf_engine(tmp_path_factory)


def _conversation(engine):
    """A test conversation of the run's own corpus, with a recommender turn that has context."""
    for conv in engine.pipeline.corpus.splits["test"]:
        if len(conv.turns) >= 4:
            return conv
    raise AssertionError("no test conversation")


# ------------------------------------------------------------ the engine
def test_a_turn_becomes_the_sample_training_builds(engine):
    """next_turn_sample over a corpus conversation's turns = the sample build_samples made for its next turn."""
    conv = _conversation(engine)
    built = {s.turn_index: s for s in engine.pipeline.samples["test"] if s.conv_id == conv.id}
    t = max(built)
    sample = engine.builder.next_turn_sample(conv.turns[:t], conv_id=conv.id)
    expected = built[t]
    for name in ("context_tokens", "context_token_entities", "context_token_items", "context_entities",
                 "context_entity_turns", "context_words", "context_items", "context_text", "context_turns"):
        assert getattr(sample, name) == getattr(expected, name), name


def test_typed_names_are_found_as_the_corpus_annotates_them(engine):
    """A corpus turn typed without its annotations gives the same mentions back (items and entities)."""
    found = annotated = 0
    for turn in (t for c in engine.pipeline.corpus.splits["train"][:40] for t in c.turns):
        typed = engine.finder.turn(turn.index, turn.role, turn.text)
        want_items = {m.id for m in turn.items}
        want_entities = {m.id for m in turn.entities}
        annotated += len(want_items) + len(want_entities)
        found += len(want_items & {m.id for m in typed.items}) + len(want_entities & {m.id for m in typed.entities})
    assert annotated > 50
    assert found / annotated > 0.9


def test_placeholders_are_shown_as_names_and_typed_ones_are_items(engine):
    items = engine.pipeline.items
    text = f"try {items.tokens[2]} or {items.tokens[5]}!"
    assert engine.show_items(text) == f"try {engine.item_names[2]} or {engine.item_names[5]}!"
    turn = engine.finder.turn(1, RECOMMENDER, text)
    assert [m.id for m in turn.items] == [items.ids[2], items.ids[5]] and turn.recommended == [items.ids[2],
                                                                                                 items.ids[5]]


def test_items_named_anywhere_in_the_conversation_are_never_recommended(engine):
    session = engine.session()
    everything = len(engine.item_names)
    named = engine.item_names[:3]
    answer = session.say(f"I saw {named[0]} and {named[1]}", top_n=everything)
    shown = [r.name for r in answer.recommendations]
    assert named[0] not in shown and named[1] not in shown and named[2] in shown
    assert len(shown) == everything - 2
    answer = session.say(f"and {named[2]} too", top_n=everything)
    assert not set(named) & {r.name for r in answer.recommendations}
    assert set(named) <= set(answer.why.excluded)


def test_why_contributions_are_leave_one_out_score_drops(engine):
    import torch

    session = engine.session()
    answer = session.say(f"I loved {engine.item_names[4]}, something scary please")
    top = answer.recommendations[0]
    sample = engine.sample(session.turns[:1])
    names = {e.node: e.contribution for e in answer.why.evidence}
    assert answer.why.top_item == top.name and len(names) == len(sample.context_entities) + len(sample.context_words)
    target = engine.pipeline.items.ids.index(top.item_id)
    with torch.no_grad():
        full = engine.model(engine._collate([sample]), ["scores"])["scores"][0, target]
        node = sample.context_entities[0]
        without = type(sample)(**{**vars(sample), "context_entities": sample.context_entities[1:],
                                  "context_entity_turns": sample.context_entity_turns[1:]})
        left_out = engine.model(engine._collate([without]), ["scores"])["scores"][0, target]
    assert names[engine.entity_graph.nodes[node]] == pytest.approx(float(full - left_out), abs=1e-3)


@pytest.mark.parametrize("text", ["", " \t\n ", "\x00\x1b\x7f", "x" * 501])
def test_unusable_utterances_are_input_errors(text):
    with pytest.raises(InputError):
        clean_utterance(text)


def test_control_characters_go_and_markup_stays():
    assert clean_utterance("  <b>hi</b>\x00\x07 there\u2028 ") == "<b>hi</b> there"


# ------------------------------------------------------------ crs chat, piped
SCRIPT = ["I want something scary with ghosts", "/why", "/recs 3", "/bogus", "", "\x01\x02", "/reset",
          "anything funny?", "/quit", "never read"]


def test_piped_chat_prints_a_transcript(engine):
    out = io.StringIO()
    assert ChatLoop(engine, stdin=io.StringIO("\n".join(SCRIPT) + "\n"), stdout=out).run() == 0
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith("crs chat: kgsf on demo (60 items) answers with replies and recommendations")
    assert "you> I want something scary with ghosts" in lines
    assert sum(line.startswith("bot> ") for line in lines) == 2  # two utterances, two replies
    assert text.count("  recommended:") == 3  # two turns and /recs 3
    after_recs = lines[lines.index("you> /recs 3") + 1:lines.index("you> /bogus")]
    assert after_recs[0] == "  recommended:" and len(after_recs) == 4
    assert "    word   scary" in text and "leave-one-out" in text
    assert "error: unknown command '/bogus'" in text
    assert "error: the utterance is empty" in text and "you> \ufffd\ufffd" in text
    assert "(new conversation)" in text and lines[-1] == "bye" and "never read" not in text


@pytest.mark.slow  # loads the run again through the command: about 5 s
def test_crs_chat_command_with_a_script_on_stdin(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello, anything with horror?\n/quit\n"))
    assert cli.main(["chat", str(run_dir), "--recs", "2"]) == 0
    out = capsys.readouterr().out
    assert "you> hello, anything with horror?" in out and "    2. " in out and "    3. " not in out


def test_crs_chat_errors_are_one_paragraph(tmp_path, capsys):
    assert cli.main(["chat", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.split("\n", 1)[1]  # after the "[crs] loading ..." line
    assert err.startswith("error: ") and "no such run directory" in err and "Traceback" not in err
    assert cli.main(["chat", str(tmp_path), "--recs", "0"]) == 2
    assert "--recs" in capsys.readouterr().err


# ------------------------------------------------------------ crs chat, in a terminal
@pytest.mark.slow  # the child process loads the run again: about 10 s on a free core
def test_chat_in_a_pseudo_terminal(run_dir):
    """Drive `crs chat` as a person would: prompts, echo, commands, Ctrl-D."""
    pexpect = pytest.importorskip("pexpect")
    crs = Path(sys.executable).parent / "crs"
    child = pexpect.spawn(str(crs), ["chat", str(run_dir), "--recs", "3"], encoding="utf-8", timeout=120,
                          env={**os.environ, "TERM": "dumb", "OMP_NUM_THREADS": "1"}, dimensions=(40, 200))
    try:
        child.expect(r"Type /help for commands\.")
        child.expect_exact("you> ")
        child.sendline("I want something scary with ghosts")
        child.expect(r"bot> ([^\r\n]*)\r\n")
        child.expect(r"recommended:\r\n +1\. [^\r\n]+\(-?\d+\.\d{3}\)\r\n +2\. [^\r\n]+\r\n +3\. ")
        child.expect_exact("you> ")
        child.sendline("/why")
        child.expect(r"why [^\r\n]+:\r\n")
        child.expect(r"word +(scary|ghosts) +[+-]\d\.\d{4}")
        child.expect_exact("you> ")
        child.sendline("/help")
        child.expect_exact("/recs N")
        child.expect_exact("you> ")
        child.sendeof()
        child.expect_exact("bye")
        child.expect(pexpect.EOF)
    finally:
        transcript = child.before
        child.close()
    assert child.exitstatus == 0, transcript


@pytest.mark.slow  # builds and loads a popularity run: about 10 s
def test_a_recommendation_only_pipeline_answers_with_its_ranked_list(tmp_path):
    """No generator (popularity): no reply, no recommender turn added; the list is the answer."""
    from test_serve import TINY_KGSF

    from crs.runner import run
    from crs.serving.chat import load_engine

    world = [o for o in TINY_KGSF if o.startswith(("data.", "knowledge.", "seed="))]
    assert run(None, ["preset=popularity", "data=demo", *world], run_dir=str(tmp_path / "pop"), progress=False) == 0
    engine = load_engine(str(tmp_path / "pop"))
    assert not engine.has_generator
    out = io.StringIO()
    script = f"I liked {engine.item_names[0]}\nand something funny\n/quit\n"
    assert ChatLoop(engine, stdin=io.StringIO(script), stdout=out).run() == 0
    text = out.getvalue()
    assert "answers with recommendations." in text and "bot> " not in text and text.count("  recommended:") == 2
    session = engine.session()
    answer = session.say("I want a comedy")
    assert answer.reply is None and len(session.turns) == 1
    counts = engine.pipeline.items.train_counts.tolist()
    top = engine.pipeline.items.ids.index(answer.recommendations[0].item_id)
    assert counts[top] == max(counts)  # the item recommended most often in train


def test_item_names_of_function_words_only_are_not_matched_in_running_text():
    """"Her (2013)" is found with its year, never as the pronoun; "Heat" with its year, or capitalised."""
    import torch

    from crs.data.schema import SEEKER
    from crs.interfaces import ItemIndex
    from crs.serving.session import MentionFinder

    names = ["Her (2013)", "Heat (1995)"]
    items = ItemIndex(["m1", "m2"], names, torch.tensor([1, 2]), torch.zeros(2))
    finder = MentionFinder(items, names, entity_graph=None, linker=None)
    turn = finder.turn(0, SEEKER, "I gave her Heat and she loved Her (2013)")
    assert [(m.id, m.text) for m in turn.items] == [("m2", "Heat"), ("m1", "Her (2013)")]
    # a one-word name without its year only as written: "I loved the heat" names no movie
    assert finder.turn(0, SEEKER, "I loved the heat").items == []
    assert [m.id for m in finder.turn(0, SEEKER, "I loved the heat (1995)").items] == ["m2"]

"""Per-user tasks (crs.data.tasks.user_tasks): grouping, support/query splits, seeded re-draws."""
import pytest

from crs.data.samples import Sample
from crs.data.tasks import conversation_order, user_tasks
from crs.errors import ConfigError


def _samples():
    """User 1: conversations c10, c9, c2 (two turns each, the second expanded to two target items);
    user 2: one conversation c5 with three answered turns; c7 and c8 have no user."""
    out = []
    for conv, user, turns in [("c10", 1, 2), ("c5", 2, 3), ("c9", 1, 2), ("c7", 0, 2), ("c2", 1, 2), ("c8", 0, 1)]:
        for turn in range(1, 2 * turns, 2):
            base = Sample(conv_id=conv, user_index=user, turn_index=turn, target_items=[turn, turn + 100])
            out += [base.for_item(turn), base.for_item(turn + 100)]
    return out


def _convs(samples):
    return list(dict.fromkeys(s.conv_id for s in samples))


def test_conversation_order_is_natural():
    assert sorted(["c10", "c9", "c2", "b1", "c2a"], key=conversation_order) == ["b1", "c2", "c2a", "c9", "c10"]
    assert sorted(["20001", "3", "test-12", "test-2"], key=conversation_order) == ["3", "20001", "test-2", "test-12"]


def test_users_split_first_half_of_conversations_by_id():
    samples = _samples()
    tasks = user_tasks(samples)
    assert [(t.key, t.unit) for t in tasks] == [("user:1", "user"), ("user:2", "user"),
                                                ("conversation:c7", "conversation"),
                                                ("conversation:c8", "conversation")]
    one, two, c7, c8 = tasks
    assert one.conversations == ["c2", "c9", "c10"] and one.user_index == 1 and not one.single
    assert _convs(one.support) == ["c2"] and _convs(one.query) == ["c9", "c10"]  # floor(3/2) = 1 in support
    assert len(one.support) == 4 and len(one.query) == 8  # every expanded sample kept, in order
    assert [s.turn_index for s in one.query[:4]] == [1, 1, 3, 3]
    # one conversation: scored unadapted (query_only)
    assert two.single and two.support == [] and len(two.query) == 6
    assert c7.user_index == 0 and c7.support == [] and _convs(c7.query) == ["c7"]
    every = [s for t in tasks for s in t.support + t.query]  # each sample in exactly one task
    assert sorted(map(id, every)) == sorted(map(id, samples))


def test_turn_split_cuts_between_answered_turns():
    tasks = {t.key: t for t in user_tasks(_samples(), single="turn_split")}
    two = tasks["user:2"]  # turns 1, 3, 5 -> support: turn 1 (floor(3/2) = 1 turn), query: turns 3 and 5
    assert [s.turn_index for s in two.support] == [1, 1]
    assert [s.turn_index for s in two.query] == [3, 3, 5, 5]
    c8 = tasks["conversation:c8"]  # one answered turn: nothing to adapt on
    assert c8.support == [] and len(c8.query) == 2
    # several conversations: turn_split does not apply
    assert _convs(tasks["user:1"].support) == ["c2"]


def test_conversation_unit_makes_every_conversation_a_task():
    tasks = user_tasks(_samples(), unit="conversation", single="turn_split")
    assert [t.key for t in tasks] == [f"conversation:{c}" for c in ("c2", "c5", "c7", "c8", "c9", "c10")]
    assert all(t.single and t.unit == "conversation" for t in tasks)
    assert {t.key: t.user_index for t in tasks}["conversation:c9"] == 1
    c9 = tasks[4]
    assert [s.turn_index for s in c9.support] == [1, 1] and [s.turn_index for s in c9.query] == [3, 3]


def test_seeded_random_halves_are_stable_and_redrawn():
    def halves(seed):
        task = user_tasks(_samples(), seed=seed)[0]
        return tuple(_convs(task.support)), tuple(_convs(task.query))

    assert halves(3) == halves(3)
    draws = {halves(seed) for seed in range(40)}
    assert len(draws) == 3  # each of c2 / c9 / c10 ends up as the single support conversation
    for support, query in draws:
        assert len(support) == 1 and len(query) == 2 and set(support + query) == {"c2", "c9", "c10"}


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="user_tasks.single"):
        user_tasks(_samples(), single="half")
    with pytest.raises(ConfigError, match="user_tasks.unit"):
        user_tasks(_samples(), unit="seeker")
    assert user_tasks([]) == []

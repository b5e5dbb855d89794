"""samples.roles and the all-turns protocol (issue 8, part C): the default samples are unchanged; all_turns scores
exactly the turns and items the C2-CRS loader makes recommendation data of; crslab keeps its meaning."""
from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from crs import cli
from crs.config.spec import SamplesSpec
from crs.data import build, prepare
from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, IndexedGraph, KnowledgeGraph
from crs.plugins.datasets.redial import RedialDataset
from crs.plugins.metrics.protocols import AllTurnsProtocol, CRSLabProtocol

REPO = Path(__file__).resolve().parents[1]
BOTH = ["seeker", "recommender"]


def _demo_digest(spec: SamplesSpec) -> str:
    """A hash of the vocabulary and of every sample of the default demo corpus (what every demo figure rests on)."""
    from crs.plugins.demo.corpus import demo_concept_graph, demo_corpus, demo_entity_graph

    corpus = prepare.ensure_valid_split(demo_corpus(), 0.1, 42)
    entity = IndexedGraph.from_graph("entity_kg", demo_entity_graph(), prepare.item_entity_names(corpus))
    word = IndexedGraph.from_graph("word_kg", demo_concept_graph())
    items = prepare.build_item_index(corpus, entity)
    vocab = prepare.build_vocab(corpus, 1, items)
    users = prepare.build_user_index(corpus)
    digest = hashlib.sha256(json.dumps(vocab.tokens).encode())
    for split in ("train", "valid", "test"):
        for s in build.build_samples(corpus.split(split), vocab=vocab, items=items, entity_graph=entity,
                                     word_graph=word, users=users, spec=spec):
            digest.update(json.dumps([s.conv_id, s.turn_index, s.context_tokens, s.context_items,
                                      s.context_entities, s.target_items, s.response_tokens]).encode())
    return digest.hexdigest()


def test_default_roles_leave_the_demo_samples_unchanged():
    # computed before samples.roles existed (2026-12-01): recommender turns only, exactly as before
    before = "b0cf6f38006c6c5b8e8c004dd4581882e054e1fd0c332f2faa47872fba2b6dae"
    assert SamplesSpec().roles == ["recommender"]
    assert _demo_digest(SamplesSpec()) == before


def test_roles_must_name_speakers():
    with pytest.raises(ConfigError, match="samples.roles"):
        build.check_roles([])
    with pytest.raises(ConfigError, match="samples.roles.1"):
        build.check_roles(["seeker", "recomender"])


# ------------------------------------------------------------------ one hand-built ReDial conversation
SEEKER_ID, REC_ID = 1, 2
MESSAGES = [  # (sender, text); consecutive messages of one sender form one turn, as in the C2-CRS loader
    (SEEKER_ID, "hi, I loved @100"),  # first turn: no context, never a sample
    (REC_ID, "hello! did you see @200 or @201?"),
    (REC_ID, "@200 is great"),  # merged into the turn above: @200 counted once here
    (SEEKER_ID, "I saw @201 and liked it"),  # a seeker turn mentioning a movie
    (REC_ID, "what genre do you like?"),  # mentions nothing
    (SEEKER_ID, "comedies, like @999"),  # @999 is no known movie
    (SEEKER_ID, "or @300"),
    (REC_ID, "then @300 and @100"),  # a recommender turn naming movies already mentioned
]
MOVIES = {"100": "Alpha (1990)", "200": "Beta (1991)", "201": "Gamma (1992)", "300": "Delta (1993)"}
UNLINKED = {"201"}  # a movie the KG lacks (KGSF's id2entity: None): the C2-CRS loader never scores it


def _official_pairs(messages, movies, roles=("Seeker", "Recommender")) -> list[tuple[int, str]]:
    """(merged turn index, movie id) of every recommendation sample, written out from the C2-CRS loader
    (Zyh716/WSDM2022-C2CRS: ReDialDataset._merge_conv_data merges consecutive turns of one role,
    _augment_and_add makes a sample of every merged turn with context, rec_process_fn_given_dataset one per movie
    in its `items`; CRSLab's KGSF loader adds `if conv_dict['role'] == 'Recommender'`).  The loader keeps a movie
    named twice in a turn twice; crs protocols count a turn's item once, so the pairs are de-duplicated."""
    merged: list[dict] = []
    for sender, text in messages:
        role = "Seeker" if sender == SEEKER_ID else "Recommender"
        found = [m for m in re.findall(r"@(\d+)", text) if m in movies]
        if merged and merged[-1]["role"] == role:
            merged[-1]["movies"] += found
        else:
            merged.append({"role": role, "movies": found})
    pairs = []
    for index, turn in enumerate(merged):
        if index == 0 or turn["role"] not in roles:  # `if len(context_tokens) > 0`
            continue
        pairs += [(index, movie) for movie in dict.fromkeys(turn["movies"])]
    return pairs


@pytest.fixture(scope="module")
def redial_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("redial")
    conversation = {
        "conversationId": "1", "initiatorWorkerId": SEEKER_ID, "respondentWorkerId": REC_ID,
        "movieMentions": MOVIES, "initiatorQuestions": {}, "respondentQuestions": {},
        "messages": [{"text": text, "senderWorkerId": sender, "messageId": i, "timeOffset": i}
                     for i, (sender, text) in enumerate(MESSAGES)],
    }
    for name in ("train.jsonl.gz", "test.jsonl.gz"):
        with gzip.open(root / name, "wt", encoding="utf-8") as out:
            out.write(json.dumps(conversation) + "\n")
    (root / "movies.csv").write_text("movieId,movieName,nbMentions\n" +
                                     "".join(f"{k},{v},1\n" for k, v in MOVIES.items()))
    (root / "link.pkl").write_bytes(pickle.dumps({int(k): None if k in UNLINKED else f"<dbpedia:{v}>"
                                                  for k, v in MOVIES.items()}))
    config = RedialDataset.Config(root=str(root), train="train.jsonl.gz", test="test.jsonl.gz",
                                  movie_linking="link.pkl", movies_csv="movies.csv", metadata=None)
    return RedialDataset(config, BuildDeps(path="data")).load()


def _samples(corpus, roles, with_graph=False):
    kg = KnowledgeGraph(ENTITY, [f"<dbpedia:{v}>" for k, v in MOVIES.items() if k not in UNLINKED], [], [], [], [])
    graph = IndexedGraph.from_graph("entity_kg", kg, extra_nodes=prepare.item_entity_names(corpus))
    items = prepare.build_item_index(corpus, graph)
    vocab = prepare.build_vocab(corpus, 1, items)
    samples = build.build_samples(corpus.split("test"), vocab=vocab, items=items, entity_graph=graph,
                                  word_graph=None, users={}, spec=SamplesSpec(roles=roles))
    return (samples, items, graph) if with_graph else (samples, items)


def _scored(protocol_cls, samples, items, config=None, graphs=None) -> list[tuple[int, str]]:
    deps = BuildDeps(path="evaluation.protocols.0", items=items, graphs=graphs or {})
    protocol = protocol_cls(config or protocol_cls.Config(), deps)
    return [(s.turn_index, items.ids[s.target_item]) for s in protocol.rec_samples(samples)]


def test_all_turns_scores_exactly_the_turns_the_c2crs_loader_makes_samples_of(redial_corpus):
    samples, items = _samples(redial_corpus, BOTH)
    expected = _official_pairs(MESSAGES, MOVIES)
    assert expected == [(1, "200"), (1, "201"), (2, "201"), (4, "300"), (5, "300"), (5, "100")]  # both roles
    assert _scored(AllTurnsProtocol, samples, items) == expected


def test_all_turns_linked_scores_what_the_loader_scores_on_its_kg(redial_corpus):
    samples, items, graph = _samples(redial_corpus, BOTH, with_graph=True)
    linked = {k: v for k, v in MOVIES.items() if k not in UNLINKED}  # `if movie in self.entity2id`
    expected = _official_pairs(MESSAGES, linked)
    assert expected == [(1, "200"), (4, "300"), (5, "300"), (5, "100")]
    config = AllTurnsProtocol.Config(items="linked")
    assert _scored(AllTurnsProtocol, samples, items, config, {"entity_kg": graph}) == expected
    protocol = AllTurnsProtocol(config, BuildDeps(path="p", items=items, graphs={"entity_kg": graph}))
    assert protocol.id == "all-turns-linked-v1"
    batch = {"batch.context_items": torch.zeros(2, 3, dtype=torch.long)}
    mask = protocol.candidate_mask(batch, len(items))
    assert mask.shape == (2, len(items)) and [items.ids[i] for i in range(len(items)) if not mask[0, i]] == ["201"]
    with pytest.raises(ConfigError, match="evaluation.protocols.0.items"):
        _scored(AllTurnsProtocol, samples, items, config, {})  # no entity graph


def test_crslab_scores_the_recommender_turns_whatever_the_roles(redial_corpus):
    expected = _official_pairs(MESSAGES, MOVIES, roles=("Recommender",))
    assert expected == [(1, "200"), (1, "201"), (5, "300"), (5, "100")]
    for roles in (["recommender"], BOTH):
        samples, items = _samples(redial_corpus, roles)
        assert _scored(CRSLabProtocol, samples, items) == expected
    default, _ = _samples(redial_corpus, ["recommender"])
    assert [s.turn_index for s in default] == [1, 3, 5]  # samples: recommender turns only, as always
    both, _ = _samples(redial_corpus, BOTH)
    assert [(s.turn_index, s.response_turn["role"]) for s in both] == [
        (1, "recommender"), (2, "seeker"), (3, "recommender"), (4, "seeker"), (5, "recommender")]


# ------------------------------------------------------------------ through `crs run` on the demo corpus
@pytest.fixture
def _repository_registry(monkeypatch):
    monkeypatch.setenv("CRS_REGISTRY", str(REPO / "registry.yaml"))


def test_the_roles_check_names_the_protocol_and_the_fix():
    from types import SimpleNamespace

    from crs.evaluation.evaluator import check_evaluable

    def pipeline(roles):
        spec = SimpleNamespace(samples=SamplesSpec(roles=roles),
                               evaluation=SimpleNamespace(protocols=[{"type": "crslab"}, {"type": "all_turns"}]))
        classes = {"crslab": CRSLabProtocol, "all_turns": AllTurnsProtocol}
        return SimpleNamespace(
            spec=spec, samples={"test": [SimpleNamespace(target_items=[1])]}, corpus=None,
            model=SimpleNamespace(has_recommender=True, has_generator=False),
            build=lambda kind, node, path: classes[node["type"]](classes[node["type"]].Config(), BuildDeps(path=path)))

    with pytest.raises(ConfigError) as err:
        check_evaluable(pipeline(["recommender"]), "test")
    assert "evaluation.protocols.1" in str(err.value) and "fix: set samples.roles: [seeker, recommender]" in str(
        err.value)
    check_evaluable(pipeline(BOTH), "test")  # no error


@pytest.mark.slow
@pytest.mark.usefixtures("_repository_registry")
def test_all_turns_without_seeker_samples_is_refused_before_training(tmp_path, capsys):
    code = cli.main(["run", "--no-progress", "--run-dir", str(tmp_path / "run"), "preset=popularity", "data=demo",
                     "evaluation.protocols=[{type: all_turns}]"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert "evaluation.protocols.0" in err and "all-turns-v1" in err and "samples.roles: [seeker, recommender]" in err
    assert not (tmp_path / "run" / "report.json").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("_repository_registry")
def test_a_run_reports_both_protocols_by_id(tmp_path, capsys):
    code = cli.main(["run", "--no-progress", "--run-dir", str(tmp_path / "run"), "preset=popularity", "data=demo",
                     "samples.roles=[seeker, recommender]",
                     "evaluation.protocols=[{type: crslab}, {type: all_turns}]"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "samples (one per seeker and recommender turn)" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["protocols"] == ["crslab-v1", "all-turns-v1"]
    counts = report["sample_counts"]
    assert counts["crslab-v1"]["rec"] == 337  # what the default roles score (README's demo run): unchanged
    assert counts["all-turns-v1"]["rec"] > counts["crslab-v1"]["rec"]

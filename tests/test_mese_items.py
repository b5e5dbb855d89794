"""MESE's item side: the metadata string (``mese_metadata``) and the item encoder (``mese_item_encoder``).

The encoder runs on the tiny random BERT shipped in crs.tiny_models.encoder (no model package needed).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crs.data.schema import Corpus, Item
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, ItemIndex
from crs.knowledge import ItemTexts
from crs.plugins.mese.item_encoder import MODELS_INSTALL, MeseItemEncoder, draw_negatives
from crs.plugins.mese.metadata import MeseMetadata, metadata_text

ID2INFO = Path(__file__).resolve().parents[2] / "shared/data/redial/ievalm_metadata_kg/id2info.json.gz"
TINY = "package:crs.tiny_models.encoder"
# movie 100030 as the official preprocessing writes it: title lower-cased without its year, then the
# first three stars, the director, the genres and the plot, separated by [SEP]
OFFICIAL_100030 = ("friends with benefits [SEP] Mila Kunis, Justin Timberlake, Patricia Clarkson [SEP] Will Gluck "
                   "[SEP] comedy, romance [SEP] A young man and woman decide to take their friendship to the next "
                   "level without becoming a couple, but soon discover that adding sex only leads to complications.")


def _corpus(items: dict[str, Item]) -> Corpus:
    return Corpus(name="t", splits={"train": [], "test": []}, items=items, report={})


def _source(**config) -> MeseMetadata:
    return MeseMetadata(MeseMetadata.Config(**config), BuildDeps(path="knowledge.metadata"))


# ----------------------------------------------------------------- metadata
@pytest.mark.shared_data
@pytest.mark.skipif(not ID2INFO.is_file(), reason="needs ../shared/data (ReDial id2info.json.gz)")
def test_movie_100030_is_the_official_string():
    corpus = _corpus({"100030": Item("100030", "Friends with Benefits (2011)")})
    texts = _source(path=str(ID2INFO)).load(corpus)
    assert texts.texts["100030"] == [OFFICIAL_100030]
    assert corpus.report["mese_metadata"] == {"items": 1, "with_metadata": 1, "title_only": 0}


def test_item_meta_gives_the_same_string_and_an_item_without_metadata_is_its_title_counted():
    record = {"name": "Friends with Benefits (2011)", "genre": ["comedy", "romance"], "director": ["Will Gluck"],
              "star": ["Mila Kunis", "Justin Timberlake", "Patricia Clarkson", "Jenna Elfman"],
              "plot": "A young man and woman decide to take their friendship to the next level without becoming a "
                      "couple, but soon discover that adding sex only leads to complications."}
    corpus = _corpus({"100030": Item("100030", "Friends with Benefits (2011)", meta=record),
                      "7": Item("7", "Some Unknown Film (1999)")})
    texts = _source().load(corpus)  # path null: Item.meta, as the redial dataset fills it
    assert texts.texts["100030"] == [OFFICIAL_100030]  # the fourth star is dropped (max_people 3)
    assert texts.texts["7"] == ["some unknown film"]
    assert corpus.report["mese_metadata"] == {"items": 2, "with_metadata": 1, "title_only": 1}


def test_missing_fields_leave_empty_slots_and_fields_choose_them():
    assert metadata_text({"genre": ["drama"]}, "Pari (1995)") == "pari [SEP] [SEP] [SEP] drama [SEP]"
    record = {"star": ["A"], "director": ["B"], "genre": ["g"], "plot": "p"}
    assert metadata_text(record, "T (2000)", ("name", "star", "director")) == "t [SEP] A [SEP] B"


def test_inspired_items_match_by_normalised_title_and_shared_titles_match_nothing(tmp_path):
    info = {"1": {"name": "Se7en (1995)", "genre": ["crime"]},
            "2": {"name": "Heat (1995)", "genre": ["action"]}, "3": {"name": "Heat (1986)", "genre": ["drama"]}}
    path = tmp_path / "id2info.json"
    path.write_text(json.dumps(info))
    corpus = _corpus({"http://dbpedia.org/Se7en": Item("http://dbpedia.org/Se7en", "se7en  (1995)"),
                      "heat-1995": Item("heat-1995", "HEAT (1995)"), "heat": Item("heat", "Heat"),
                      "<http://dbpedia.org/resource/Heat_(1986_film)>":
                          Item("<http://dbpedia.org/resource/Heat_(1986_film)>", "Heat")})
    loaded = _source(path=str(path)).load(corpus).texts
    assert loaded["http://dbpedia.org/Se7en"] == ["se7en [SEP] [SEP] [SEP] crime [SEP]"]
    assert loaded["heat-1995"] == ["heat [SEP] [SEP] [SEP] action [SEP]"]  # the year decides
    assert loaded["heat"] == ["heat"]  # two films are called Heat: no guess, the title alone
    # the URI names the year
    assert loaded["<http://dbpedia.org/resource/Heat_(1986_film)>"] == ["heat [SEP] [SEP] [SEP] drama [SEP]"]
    assert corpus.report["mese_metadata"]["title_only"] == 1


def test_a_missing_metadata_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="knowledge.metadata.path"):
        _source(path=str(tmp_path / "nope.json")).load(_corpus({}))


# ----------------------------------------------------------------- encoder
def _deps(n_items: int = 40, texts: bool = True) -> BuildDeps:
    ids = [str(1000 + i) for i in range(n_items)]
    names = [f"film number {i}" for i in range(n_items)]
    items = ItemIndex(ids=ids, names=names, entity_nodes=torch.arange(1, n_items + 1),
                      train_counts=torch.zeros(n_items))
    # texts of different lengths, so that chunks pad
    item_texts = {"metadata": ItemTexts("metadata", {i: [f"{n} [SEP] " + "star " * (k % 7)]
                                                     for k, (i, n) in enumerate(zip(ids, names))})} if texts else {}
    return BuildDeps(path="model.item_encoder", items=items, item_texts=item_texts)


def _encoder(deps: BuildDeps | None = None, **config) -> MeseItemEncoder:
    torch.manual_seed(0)
    defaults = dict(source=TINY, random_init=True, select_dim=12, ite_dim=10, select_negatives=5,
                    rank_negatives=7, chunk=4)
    return MeseItemEncoder(MeseItemEncoder.Config(**{**defaults, **config}), deps or _deps())


def test_keys_and_embeds_are_projections_of_the_masked_mean_of_the_encoder_states():
    encoder = _encoder(shared=False).eval()
    index = torch.tensor([3, 0, 5])
    with torch.no_grad():
        keys, embeds = encoder.encode(index)
        for row, item in enumerate(index.tolist()):
            ids = torch.tensor([encoder.tokenizer(encoder.item_text(item))["input_ids"]])
            for enc, proj, got in ((encoder.select_encoder, encoder.select_projection, keys),
                                   (encoder.ite_encoder, encoder.ite_projection, embeds)):
                states = enc(input_ids=ids).last_hidden_state[0]  # no padding at all
                assert torch.allclose(got[row], proj(states.mean(0)), atol=1e-5)


def test_pooling_is_padding_invariant():
    encoder = _encoder().eval()
    lengths = [len(encoder.tokenizer(encoder.item_text(i))["input_ids"]) for i in range(8)]
    short, long = lengths.index(min(lengths)), lengths.index(max(lengths))
    assert lengths[short] < lengths[long]
    with torch.no_grad():
        alone, _ = encoder.encode(torch.tensor([short]))
        padded, _ = encoder.encode(torch.tensor([long, short]))  # one chunk: `short` is padded
    assert torch.allclose(alone[0], padded[1], atol=1e-5)


def test_items_without_a_text_are_encoded_from_their_title():
    encoder = _encoder(_deps(texts=False), metadata=None)
    assert encoder.item_text(2) == "film number 2"
    assert _encoder().item_text(2).startswith("film number 2 [SEP]")


def test_eval_encodes_every_item_once_and_caches_until_train_or_a_state_load():
    encoder = _encoder().eval()
    calls = []
    encoder.select_encoder.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        first = encoder({})
        n_calls = len(calls)
        assert n_calls == 10  # 40 items, chunk 4
        assert torch.equal(first["item_index"], torch.arange(40)) and not first["item_negatives"].any()
        second = encoder({})
        assert len(calls) == n_calls and torch.equal(second["item_keys"], first["item_keys"])  # a cache hit
        encoder.train().eval()
        encoder({})
        assert len(calls) == 2 * n_calls  # train() dropped the cache
        encoder.load_state_dict(encoder.state_dict())
        encoder({})
        assert len(calls) == 3 * n_calls  # so does loading a state (e.g. the best one restored)
        encoder.on_eval_start(split="valid")
        encoder({})
        assert len(calls) == 4 * n_calls


def test_the_cache_follows_appended_items():
    deps = _deps()
    encoder = _encoder(deps).eval()
    with torch.no_grad():
        assert len(encoder({})["item_index"]) == 40
        deps.items.ids.append("new")
        deps.items.names.append("a new film")
        assert len(encoder({})["item_index"]) == 41
    assert encoder.item_text(40) == "a new film"


def _batch(targets: list[list[int]], context: list[list[int]]) -> dict:
    width = max(len(t) for t in targets)
    target_items = torch.tensor([t + [0] * (width - len(t)) for t in targets])
    mask = torch.tensor([[True] * len(t) + [False] * (width - len(t)) for t in targets])
    turns = [[{"role": "seeker", "items": c, "unplaced_items": []}] for c in context]
    return {"target_items": target_items, "target_items_mask": mask, "context_turns": turns,
            "response_turn": [{"items": t, "unplaced_items": []} for t in targets]}


def test_training_encodes_batch_items_then_shared_negatives_that_exclude_them():
    encoder = _encoder().train()
    batch = _batch([[4, 9], [2]], [[1, 4], [30]])
    torch.manual_seed(7)
    out = encoder(batch)
    index, negatives = out["item_index"].tolist(), out["item_negatives"]
    assert index[:5] == [4, 9, 2, 1, 30]  # targets first, then context items, each once
    drawn = [i for i, neg in zip(index, negatives.tolist()) if neg]
    assert len(drawn) == 7 == len(set(drawn))  # max(select_negatives, rank_negatives), distinct
    assert not set(drawn) & {4, 9, 2, 1, 30}
    assert out["item_keys"].shape == (12, 12) and out["item_embeds"].shape == (12, 10)
    torch.manual_seed(7)
    assert encoder(batch)["item_index"].tolist() == index  # the global RNG decides: a resumed run draws the same


def test_negatives_are_uniform_over_the_allowed_items():
    torch.manual_seed(0)
    counts = torch.zeros(10)
    for _ in range(2000):
        counts[draw_negatives(10, [0, 1], 2)] += 1
    assert counts[:2].sum() == 0
    share = counts[2:] / counts[2:].sum()
    assert (share - 1 / 8).abs().max() < 0.03


def test_no_parameter_depends_on_the_number_of_items():
    small = {k: v.shape for k, v in _encoder(_deps(5)).state_dict().items()}
    large = {k: v.shape for k, v in _encoder(_deps(60)).state_dict().items()}
    assert small == large


def test_shared_uses_one_encoder_and_trainable_layers_freezes_the_rest():
    shared = _encoder(shared=True, trainable_layers=1)
    assert not hasattr(shared, "ite_encoder")
    frozen = [n for n, p in shared.select_encoder.named_parameters() if not p.requires_grad]
    learning = [n for n, p in shared.select_encoder.named_parameters() if p.requires_grad]
    assert any("embeddings" in n for n in frozen) and any("layer.0." in n for n in frozen)
    assert learning and all("layer.1." in n for n in learning)  # the tiny BERT has layers 0 and 1


def test_node_features_are_fused_into_the_embeds_only():
    deps = _deps(6)
    encoder = _encoder(deps, node_features_dim=3).eval()
    assert encoder.input_ports()["node_features"].key == "entity_nodes"
    nodes = torch.randn(7, 3)
    with torch.no_grad():
        plain = encoder({})
        encoder.on_eval_start()
        fused = encoder({"node_features": nodes})
    assert torch.equal(plain["item_keys"], fused["item_keys"])
    expected = plain["item_embeds"] + encoder.node_projection(nodes[deps.items.entity_nodes])
    assert torch.allclose(fused["item_embeds"], expected, atol=1e-6)


def test_a_missing_model_package_names_the_key_and_the_install_command():
    with pytest.raises(ConfigError) as err:
        _encoder(source="package:no_such_model_package_xyz")
    assert "model.item_encoder.source" in str(err.value) and MODELS_INSTALL in str(err.value)


def test_items_without_a_record_take_people_and_genre_from_the_dbpedia_graph(tmp_path):
    film, other = "<http://dbpedia.org/resource/Knives_Out>", "<http://dbpedia.org/resource/Nothing>"
    entities = {film: 0, other: 1, "<http://dbpedia.org/resource/Chris_Evans_(actor)>": 2,
                "<http://dbpedia.org/resource/Rian_Johnson>": 3, "<http://dbpedia.org/resource/Mystery_film>": 4,
                "<http://dbpedia.org/resource/Lionsgate_Films>": 5}
    relations = {"<http://dbpedia.org/ontology/starring>": 0, "<http://dbpedia.org/ontology/director>": 10,
                 "<http://dbpedia.org/ontology/genre>": 8, "<http://dbpedia.org/ontology/distributor>": 6}
    edges = {"0": [[12, 0], [6, 5], [10, 3], [0, 2], [8, 4]], "1": [[6, 5]]}
    for name, value in (("dbpedia_subkg.json", edges), ("entity2id.json", entities),
                        ("relation2id.json", relations)):
        (tmp_path / name).write_text(json.dumps(value))
    corpus = _corpus({film: Item(film, "Knives Out", entity=film), other: Item(other, "Nothing", entity=other)})
    texts = _source(dbpedia=str(tmp_path)).load(corpus).texts
    assert texts[film] == ["knives out [SEP] Chris Evans [SEP] Rian Johnson [SEP] Mystery film [SEP]"]
    assert texts[other] == ["nothing"]  # only a distributor: nothing MESE's string has a place for
    assert corpus.report["mese_metadata"] == {"items": 2, "with_metadata": 1, "title_only": 1, "from_dbpedia": 1}
    with pytest.raises(ConfigError, match="lacks dbpedia_subkg.json"):
        _source(dbpedia=str(tmp_path / "nowhere")).load(corpus)

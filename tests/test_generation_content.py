"""Generation content on the demo corpus (issue 15, item 3): training the conversation stage must
make the generator better than it was untrained, measured by the run's own metrics.

The overfit-and-reproduce tests of single generators are in tests/test_generators.py (plain
Transformer) and tests/test_kgsf_decoder.py (KGSF's decoder with the copy mechanism).
"""
from __future__ import annotations

import pytest

from crs.config.loader import load_config
from crs.evaluation import evaluate
from crs.pipeline import build_pipeline
from crs.plugin_manager import get_plugin_manager
from crs.registry import Registry
from crs.training.seeding import seed_everything
from crs.training.trainer import Trainer

# KGSF's conversation stage alone (the graph encoders keep their initial weights, frozen as in the
# preset), a small decoder, one epoch on 600 of the 1200 training conversations; generation capped for speed.
CONV_ONLY = ["preset=kgsf", "data=demo", "seed=3", "~stages.1", "~stages.0",
             "model.generator={type: kgsf_decoder, dim: 32, layers: 1, heads: 2, ffn_dim: 64, "
             "word_dim: 128, entity_dim: 128}",
             "stages.0.epochs=1", "~stages.0.early_stopping", "stages.0.validate=false", "stages.0.optimizer.lr=0.003",
             "samples.max_train_conversations=600", "evaluation.max_samples=60", "evaluation.max_gen_tokens=20",
             "evaluation.metrics=[{type: bleu}, {type: ppl}]"]


@pytest.mark.slow
def test_trained_conversation_stage_beats_the_untrained_generator_on_ppl_and_bleu(tmp_path):
    registry = Registry.from_plugin_manager(get_plugin_manager())
    spec, resolved = load_config(None, [*CONV_ONLY, f"run_dir={tmp_path}"], registry=registry)
    assert [stage.name for stage in spec.stages] == ["conv"] and spec.stages[0].train == ["generator"]
    seed_everything(spec.seed)
    pipeline = build_pipeline(spec, registry, resolved)

    generated = spec.evaluation.max_samples  # as crs run passes it
    before = evaluate(pipeline, "test", tasks=("conv",), max_samples=generated)
    Trainer(pipeline, tmp_path, progress=False, tensorboard=False).fit()
    after = evaluate(pipeline, "test", tasks=("conv",), max_samples=generated)
    print("untrained:", before["crslab-v1"], "\ntrained:  ", after["crslab-v1"])
    print(*(f"{r['reference']!r} -> {r['generated']!r} {r['items_in_reply']}" for r in after.generations[:8]), sep="\n")

    # An untrained decoder is close to uniform over the vocabulary (ppl ~ |V|); one epoch cuts that
    # by two orders of magnitude.
    assert before["crslab-v1"]["gen.ppl"] > 0.5 * len(pipeline.vocab)
    assert after["crslab-v1"]["gen.ppl"] < 0.02 * before["crslab-v1"]["gen.ppl"]
    # The same 60 test samples are decoded both times (the first max_samples of the split); the trained
    # replies share real n-grams with the references, the untrained ones next to none.
    for n in (1, 2, 3, 4):
        key = f"gen.bleu-{n}"
        assert after["crslab-v1"][key] > max(0.15, 10 * before["crslab-v1"][key]), key
    # ... and they are replies, not one word repeated: most name an item, as the demo's replies do.
    assert len(after.generations) == generated == 60
    naming = [r for r in after.generations if r["items_in_reply"]]
    assert len(naming) > 0.3 * len(after.generations)
    # The items they name come from the context (the copy mechanism's job): the item's title is in it.
    names = dict(zip(pipeline.items.ids, pipeline.items.names))
    from_context = [r for r in naming if all(names[i] in " ".join(r["context"]) for i in r["items_in_reply"])]
    print(f"{len(naming)} replies name items, {len(from_context)} only items of their context")
    assert len(from_context) > 0.8 * len(naming)

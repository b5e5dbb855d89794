"""Teacher-forced copy statistics of a trained KGSF run on its test replies (BENCHMARKS.md, INSPIRED item tokens).

    python benchmarks/copy_stats.py runs/bench/item-tokens/inspired-kgsf [--generate 200]

Rebuilds the run (``crs.serving.load_pipeline``), runs the conversation loss on every
test reply without updating anything, and reads the copy mixture of ``kgsf_decoder``
(Pr = p_gen * Pr1 + (1 - p_gen) * Pr2) at each reference token: how many reference
tokens are item tokens, how many of those are *copyable* (the item's node is among the
sample's context entities), the mean copy gate 1 - p_gen, and how much of an item
token's probability comes from the copy term.  ``--generate N`` also decodes the first N
replies greedily (30 tokens, as the evaluation does) and counts distinct replies and item tokens.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a finished run of a preset with the kgsf_decoder generator")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--generate", type=int, default=0, metavar="N", help="also decode the first N replies")
    args = parser.parse_args(argv)

    import torch

    from crs.plugins.kgsf.copy import CopyMixture
    from crs.serving.load import load_pipeline

    pipeline = load_pipeline(args.run_dir)
    vocab = pipeline.vocab
    is_item = torch.zeros(len(vocab), dtype=torch.bool)
    is_item[[vocab.index[t] for t in pipeline.items.tokens if t in vocab.index]] = True

    seen: dict[str, torch.Tensor] = {}
    plain = CopyMixture.target_log_probs

    def recording(self, hidden, target_vocab, nodes, node_tokens, copyable, targets):
        """CopyMixture.target_log_probs, also keeping the gate and the copy term per target token."""
        out = plain(self, hidden, target_vocab, nodes, node_tokens, copyable, targets)
        logit = self.gate(hidden).squeeze(-1)
        use_copy = torch.where(copyable.any(dim=1)[:, None], torch.sigmoid(-logit), torch.zeros_like(logit))
        hits = node_tokens[:, None, :] == targets[:, :, None]
        copy_p = (self.attention(hidden, nodes, copyable) * hits).sum(-1)
        seen.update(targets=targets, in_context=hits.any(-1), use_copy=use_copy, copy_part=use_copy * copy_p,
                    total=out.exp())
        return out

    CopyMixture.target_log_probs = recording
    sums: dict[str, float] = defaultdict(float)
    samples = pipeline.task_samples(args.split, "conv")
    pipeline.model.eval()  # no dropout; gradients stay enabled so the decoder takes its teacher-forcing path
    for batch in pipeline.batches(samples, args.batch_size, shuffle=False, seed=0):
        pipeline.model.compute(batch, ["loss.gen"])
        with torch.no_grad():
            targets = seen["targets"]
            real = targets > 0
            item = real & is_item[targets]
            copyable = item & seen["in_context"]
            share = seen["copy_part"] / seen["total"].clamp_min(1e-30)
            sums["tokens"] += int(real.sum())
            sums["items"] += int(item.sum())
            sums["copyable"] += int(copyable.sum())
            sums["gate_all"] += float(seen["use_copy"][real].sum())
            sums["gate_items"] += float(seen["use_copy"][item].sum())
            sums["p_items"] += float(seen["total"][item].sum())
            sums["share_items"] += float(share[item].sum())
            sums["p_copyable"] += float(seen["total"][copyable].sum())
            sums["share_copyable"] += float(share[copyable].sum())
            sums["p_other"] += float(seen["total"][item & ~seen["in_context"]].sum())
    CopyMixture.target_log_probs = plain

    n, k, c = sums["tokens"], max(1, sums["items"]), max(1, sums["copyable"])
    print(f"{len(samples)} {args.split} replies, {n:.0f} reference tokens, {sums['items']:.0f} item tokens "
          f"({sums['items'] / n:.2%}); {sums['copyable']:.0f} ({sums['copyable'] / k:.1%}) copyable")
    print(f"mean copy gate 1 - p_gen: all tokens {sums['gate_all'] / n:.3f}, item tokens {sums['gate_items'] / k:.3f}")
    print(f"item tokens: mean Pr(y) {sums['p_items'] / k:.4f}, share from the copy term {sums['share_items'] / k:.1%}")
    print(f"copyable item tokens: mean Pr(y) {sums['p_copyable'] / c:.4f}, share from the copy term "
          f"{sums['share_copyable'] / c:.1%}; other item tokens: mean Pr(y) "
          f"{sums['p_other'] / max(1, sums['items'] - sums['copyable']):.5f}")
    if args.generate > 0:
        _generated(pipeline, samples[:args.generate], args.batch_size)
    return 0


def _generated(pipeline, samples: list, batch_size: int) -> None:
    """Greedy replies of `samples`: how many are distinct, how many name an item, the most frequent."""
    from collections import Counter

    import torch

    replies = []
    with torch.no_grad():
        for batch in pipeline.batches(samples, batch_size, shuffle=False, seed=0):
            state = pipeline.model(batch, [], generate_len=30)
            replies += [pipeline.vocab.decode(row.tolist()) for row in state["generated.tokens"]]
    naming = sum(any(pipeline.items.item_of_token(tok) >= 0 for tok in reply) for reply in replies)
    counts = Counter(" ".join(reply) for reply in replies)
    print(f"greedy replies: {len(replies)}, {len(counts)} distinct, {naming} with an item token; most frequent:")
    for text, n in counts.most_common(5):
        print(f"  {n:4d}  {text}")


if __name__ == "__main__":
    sys.exit(main())

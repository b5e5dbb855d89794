"""The structured pipeline spec a YAML run file is validated against.

Component nodes (``data``, ``knowledge.*``, ``model.*``, ``linker``, strategies,
protocols, metrics) are plain dicts with a ``type:`` key; the registry validates
the rest of each node against that component's own ``Config`` dataclass.
A string where a node is expected is shorthand for ``{type: <string>}``, except
``data``, where a string names a corpus bundle in registry.yaml (``corpora:``),
which sets ``data``, ``knowledge`` and ``linker`` together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

Node = dict[str, Any]


@dataclass
class ParamGroupSpec:
    """Optimizer settings for the parameters whose names match `params` (see crs.training.optim)."""

    params: list[str] = field(default_factory=list)  # fnmatch globs over "<slot>.<param>" / "shared.<name>.<param>"
    lr: Optional[float] = None  # None = the optimizer's lr
    weight_decay: Optional[float] = None  # None = the optimizer's weight_decay


@dataclass
class OptimizerSpec:
    type: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd only
    eps: float = 1e-8  # adam / adamw only
    groups: list[ParamGroupSpec] = field(default_factory=list)  # first match wins; unmatched: lr/weight_decay above
    # Globs of parameters that never decay; None = biases and normalisation-layer weights (by module type and name).
    no_decay: Optional[list[str]] = None


@dataclass
class ScheduleSpec:
    type: str = "constant"  # constant | linear | cosine | warmup_linear
    warmup_steps: int = 0
    warmup_epochs: float = 0.0  # alternative to warmup_steps (converted with the optimizer steps per epoch)


@dataclass
class EarlyStoppingSpec:
    # "loss" (valid loss of the stage's objectives), a report key (e.g. "rec.recall@10"), or a list of them (summed)
    metric: Union[str, list[str]] = "loss"
    mode: str = "min"  # min | max
    patience: int = 3


@dataclass
class StageSpec:
    name: str
    # rec: one sample per recommended item; conv: one per recommender turn; all: conv samples;
    # dialogue: one per conversation, its last recommender turn with the whole dialogue before it (MESE packing)
    task: str = "rec"
    objectives: dict[str, float] = field(default_factory=dict)  # loss name (loss.<name>) -> weight
    train: list[str] = field(default_factory=lambda: ["*"])  # slots whose parameters this stage updates
    epochs: int = 1
    batch_size: int = 32
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    early_stopping: Optional[EarlyStoppingSpec] = None
    strategy: Node = field(default_factory=lambda: {"type": "plain"})
    validate: bool = True  # evaluate on the valid split after each epoch
    accumulate: int = 1  # batches per optimizer step (gradient accumulation)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast for the training forward (fp16 adds a GradScaler)
    # batches of samples of similar padded length (crs.data.batching.batch_chunks): less padding, but batches
    # less mixed (it cost generation quality on the demo corpus: BENCHMARKS.md section 1); no preset uses it
    group_by_length: bool = False


@dataclass
class SamplesSpec:
    context_turns: int = 0  # 0 = whole history
    max_context_tokens: int = 256
    max_response_tokens: int = 48
    max_context_entities: int = 32
    max_context_words: int = 64
    entity_graph: Optional[str] = None  # knowledge name of the entity graph; None = the only one, if any
    word_graph: Optional[str] = None  # knowledge name of the word graph; None = the only one, if any
    valid_fraction: float = 0.1  # carved from train when the corpus has no valid split
    valid_by: Literal["conversation", "user"] = "conversation"  # user: valid gets whole users, disjoint from train
    # also train on each test user's support conversations (crs.data.tasks.support_samples): the baseline
    # convention of user-adaptation papers, so models that cannot adapt see what adapting ones see
    test_support_to_train: bool = False
    min_word_freq: int = 1
    # item-text sources (knowledge names, e.g. [reviews, metadata]) whose words, as often as min_word_freq over the
    # texts of the corpus's items, join the vocabulary after the train words; their counts stay the train counts
    vocab_item_texts: list[str] = field(default_factory=list)
    # whose turns become samples: [recommender] (CRSLab, KGSF as released in CRSLab) or both roles (the C2-CRS
    # loader: every turn with context; a seeker turn's targets are the items it mentions); see crs.data.build
    roles: list[Literal["recommender", "seeker"]] = field(default_factory=lambda: ["recommender"])
    max_train_conversations: int = 0  # 0 = all; for quick runs
    # featurizer components adding batch fields of their own, computed once per sample (crs.data.fields)
    featurizers: list[Node] = field(default_factory=list)


@dataclass
class EvaluationSpec:
    split: str = "test"
    protocols: list[Node] = field(default_factory=lambda: [{"type": "crslab"}])
    metrics: list[Node] = field(default_factory=lambda: [
        {"type": "recall"}, {"type": "mrr"}, {"type": "ndcg"},
        {"type": "dist"}, {"type": "bleu"}, {"type": "f1"}, {"type": "ppl"},
    ])
    generate: bool = True  # decode replies and score them (slower than ppl alone)
    max_gen_tokens: int = 30
    batch_size: int = 64
    max_samples: int = 0  # 0 = all; caps generation samples for quick runs
    # 0 = all; else scores that many recommendation samples per protocol, spread evenly over the split (for models
    # whose scoring is costly, e.g. MESE's rank pass; protocols that adapt per user are not capped); the report's
    # sample count says how many were scored
    max_rec_samples: int = 0


@dataclass
class PipelineSpec:
    data: Node
    model: dict[str, Node]
    stages: list[StageSpec]
    name: str = "pipeline"
    seed: int = 42
    # where the run's files go; the default names the system and the corpus (runs/kgsf-no-mim-inspired)
    run_dir: str = "runs/${name}-${corpus}"
    device: str = "cpu"
    threads: int = 0  # torch threads; 0 = torch's default
    knowledge: dict[str, Node] = field(default_factory=dict)
    # modules several slots use (one token embedding, one PLM), built once; slots name them (crs.shared)
    shared: dict[str, Node] = field(default_factory=dict)
    linker: Optional[Node] = None  # links non-item words into the entity graph
    samples: SamplesSpec = field(default_factory=SamplesSpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    preset: Optional[str] = None  # informational after loading: which registry.yaml preset it came from
    # the corpus's name in run_dir: set by the loader to the corpus bundle `data:` named (inspired), else data.type
    corpus: Optional[str] = None

"""The trial configuration: one type for the search, the study, the recipe and training.

A :class:`TrialConfig` is sampled from a search space, stored on the Optuna trial as a dict, written into
the recipe as YAML, and read back by ``autoembed train``. Every field is declared here once, with its
constraint next to it, so search and final training cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from autoembed.errors import AutoembedError
from autoembed.yamlio import Located, dump_yaml, load_yaml

LOSSES = ("contrastive", "triplet", "infonce")
POOLINGS = ("mean", "cls", "max")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")
PRECISIONS = ("fp32", "bf16", "fp16")
EXPORT_DTYPES = ("fp32", "fp16")
DISTANCES = ("cosine", "euclidean")
PROJECTION_INITS = ("random", "pca")


@dataclass(frozen=True)
class Rule:
    """A constraint on one field: its type, an optional range, optional allowed values."""

    types: tuple[type, ...]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    def describe(self) -> str:
        names = " or ".join("a float" if t is float else f"an {t.__name__}" if t is int else f"a {t.__name__}" for t in self.types)
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.low is not None or self.high is not None:
            lo = "(" if self.low_open else "["
            text = f"{names} in the range {lo}{self.low if self.low is not None else '-inf'}, {self.high if self.high is not None else 'inf'}]"
        else:
            text = names
        return text + (" or null" if self.optional else "")

    def check(self, value: Any) -> Any:
        """Return the value, coerced where harmless (int -> float); raise ValueError otherwise."""
        if value is None:
            if self.optional:
                return None
            raise ValueError
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError
            return value
        if isinstance(value, bool) and bool not in self.types:
            raise ValueError
        if float in self.types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, str) and float in self.types:
            try:  # YAML reads 3e-5 as a string; accept what is clearly a number
                value = float(value)
            except ValueError:
                raise ValueError from None
        if not isinstance(value, self.types):
            raise ValueError
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise ValueError
        if self.high is not None and value > self.high:
            raise ValueError
        return value


def _f(default: Any, rule: Rule) -> Any:
    return field(default=default, metadata={"rule": rule})


INT = (int,)
FLOAT = (float,)
STR = (str,)
BOOL = (bool,)


class Section:
    """Shared loading and validation for the config sections."""

    section_name: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, file: str | None = None, prefix: str = ""):
        data = data or {}
        if not isinstance(data, dict):
            raise AutoembedError(f"expected a mapping, got {type(data).__name__}", file=file, key=prefix.rstrip("."))
        lines = data.lines if isinstance(data, Located) else {}
        file = data.file if isinstance(data, Located) else file
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in fields]
        if unknown:
            raise AutoembedError(
                f"unknown key {unknown[0]!r}; expected one of: {', '.join(fields)}",
                file=file,
                line=lines.get(unknown[0]),
                key=prefix + unknown[0],
            )
        values = {}
        for name, f in fields.items():
            if name not in data:
                continue
            rule: Rule | None = f.metadata.get("rule")
            value = data[name]
            if rule is not None:
                try:
                    value = rule.check(value)
                except ValueError:
                    raise AutoembedError(
                        f"must be {rule.describe()}, got {value!r}", file=file, line=lines.get(name), key=prefix + name
                    ) from None
            elif name == "k":
                value = _parse_ks(value, file=file, line=lines.get(name), key=prefix + name)
            values[name] = value
        obj = cls(**values)
        obj.validate(file=file, lines=lines, prefix=prefix)
        return obj

    def validate(self, *, file: str | None, lines: dict[str, int], prefix: str) -> None:
        """Cross-field checks; sections override."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _parse_ks(value: Any, *, file, line, key) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            value = None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, int) and v >= 1 for v in value):
        raise AutoembedError(f"must be a non-empty list of positive integers, got {value!r}", file=file, line=line, key=key)
    return tuple(sorted(set(value)))


@dataclass
class DataConfig(Section):
    """Where the data comes from and how it is split and tokenized."""

    train: str | None = _f(None, Rule(STR, optional=True))
    val: str | None = _f(None, Rule(STR, optional=True))
    corpus: str | None = _f(None, Rule(STR, optional=True))
    val_fraction: float = _f(0.1, Rule(FLOAT, 0.0, 0.9, low_open=True))
    split_seed: int = _f(0, Rule(INT))
    max_seq_length: int = _f(128, Rule(INT, 8, 8192))
    # mined negatives per training row: the base model ranks the corpus (else the training positives) for each
    # query, and the n highest-ranked texts that are not its positives join that row (autoembed/mining.py)
    hard_negatives: int = _f(0, Rule(INT, 0, 64))
    # unlabeled general-domain text (one a line, or JSONL/CSV with a ``text`` column) for loss.adversarial_weight
    general_texts: str | None = _f(None, Rule(STR, optional=True))
    # training queries only, each step afresh, seeded by (training.seed, step, row) (autoembed/augment.py)
    augment_delete_rate: float = _f(0.0, Rule(FLOAT, 0.0, 0.9))
    augment_swap_rate: float = _f(0.0, Rule(FLOAT, 0.0, 0.9))
    # positive-aware mining (NV-Retriever's TopK-PercPos): a mined candidate scoring above ratio x its query's positive
    # score (by the base model), or within margin of it, is skipped as a likely unlabeled answer; null = off
    mining_max_score_ratio: float | None = _f(None, Rule(FLOAT, 0.0, 1.0, low_open=True, optional=True))
    mining_margin: float | None = _f(None, Rule(FLOAT, 0.0, 2.0, optional=True))
    # queries that share an answer are paraphrases: add this many (x the training rows) query -> query pairs
    # drawn from them (autoembed/data.py synonym_pairs); 0 = off
    synonym_pairs: float = _f(0.0, Rule(FLOAT, 0.0, 1.0))
    # files of pairs that only train, never validate; rows whose text equals a validation query are dropped
    extra_train: list[str] | None = None

    def validate(self, *, file, lines, prefix):
        if not self.train:
            raise AutoembedError("a training file is required", file=file, key=prefix + "train")
        extra = self.extra_train
        if isinstance(extra, str):
            extra = [extra]
        if extra is not None and (not isinstance(extra, (list, tuple)) or not all(isinstance(x, str) and x for x in extra)):
            raise AutoembedError(
                f"must be a list of file paths or null, got {self.extra_train!r}", file=file, line=lines.get("extra_train"), key=prefix + "extra_train"
            )
        self.extra_train = list(extra) if extra else None


@dataclass
class ArchitectureConfig(Section):
    """What is built on top of (and inside) the backbone."""

    attention_heads: int | None = _f(None, Rule(INT, 1, 1024, optional=True))
    hidden_dropout: float | None = _f(None, Rule(FLOAT, 0.0, 0.9, optional=True))
    attention_dropout: float | None = _f(None, Rule(FLOAT, 0.0, 0.9, optional=True))
    pooling: str = _f("mean", Rule(STR, choices=POOLINGS))
    adapter_depth: int = _f(0, Rule(INT, 0, 8))
    adapter_width: int = _f(512, Rule(INT, 1, 65536))
    adapter_activation: str = _f("relu", Rule(STR, choices=ACTIVATIONS))
    head_dropout: float = _f(0.0, Rule(FLOAT, 0.0, 0.9))
    output_dim: int | None = _f(None, Rule(INT, 1, 65536, optional=True))
    normalize: bool = _f(True, Rule(BOOL))
    # true: each adapter layer is a residual block x + W2 act(W1 x) (W1 hidden -> adapter_width, W2 back) with W2 zero
    # at step 0, so the adapter starts as the identity and keeps the hidden width (autoembed/model.py)
    adapter_residual: bool = _f(False, Rule(BOOL))
    # pca: the projection starts as the top output_dim principal directions of the base model's embeddings of the
    # training texts (uncentered), so a full-width projection is a rotation; random: a seeded random init
    projection_init: str = _f("random", Rule(STR, choices=PROJECTION_INITS))

    def validate(self, *, file, lines, prefix):
        if self.projection_init == "pca" and self.output_dim is not None and self.adapter_depth > 0 and not self.adapter_residual:
            raise AutoembedError(
                "must be 'random' after a non-residual adapter (PCA directions are the base model's, whose width a "
                "plain adapter changes); set adapter_residual: true",
                file=file,
                line=lines.get("projection_init"),
                key=prefix + "projection_init",
            )


@dataclass
class LossConfig(Section):
    """The training objective."""

    type: str = _f("infonce", Rule(STR, choices=LOSSES))
    margin: float = _f(0.5, Rule(FLOAT, 0.0, 100.0))
    distance: str = _f("cosine", Rule(STR, choices=DISTANCES))
    temperature: float = _f(0.05, Rule(FLOAT, 0.0, 10.0, low_open=True))
    label_smoothing: float = _f(0.0, Rule(FLOAT, 0.0, 0.5))
    symmetric: bool = _f(False, Rule(BOOL))
    # a linear classifier over the embedding, trained with cross-entropy on each row's class (its doc_id, else its
    # positive text) and dropped from the saved model (autoembed/classification.py); 0 is off
    classification_weight: float = _f(0.0, Rule(FLOAT, 0.0, 100.0))
    # the strength of the reversed gradient from a domain classifier telling data.general_texts from the training
    # texts (autoembed/adversarial.py); 0 is off
    adversarial_weight: float = _f(0.0, Rule(FLOAT, 0.0, 100.0))


@dataclass
class TrainingConfig(Section):
    """The optimizer, the schedule and the run."""

    backbone_lr: float = _f(3e-5, Rule(FLOAT, 0.0, 1.0))
    head_lr: float = _f(1e-3, Rule(FLOAT, 0.0, 1.0))
    weight_decay: float = _f(0.01, Rule(FLOAT, 0.0, 1.0))
    warmup_ratio: float = _f(0.1, Rule(FLOAT, 0.0, 1.0))
    max_grad_norm: float | None = _f(1.0, Rule(FLOAT, 0.0, 1e6, low_open=True, optional=True))
    batch_size: int = _f(32, Rule(INT, 2, 65536))
    epochs: float = _f(1.0, Rule(FLOAT, 0.0, 1000.0, low_open=True))
    max_steps: int | None = _f(None, Rule(INT, 1, 10**9, optional=True))
    freeze_layers: int = _f(0, Rule(INT, 0, 1000))
    seed: int = _f(42, Rule(INT))
    # torch CPU threads; the search sets it from the trial's slice and records it, so training from the
    # recipe sums in the same order and reproduces the trial bit for bit
    threads: int | None = _f(None, Rule(INT, 1, 1024, optional=True))
    precision: str = _f("fp32", Rule(STR, choices=PRECISIONS))
    device: str = _f("auto", Rule(STR))
    # torch.compile the backbone (dynamic shapes): fewer, fused kernels on CUDA, at a compile per worker process
    compile: bool = _f(False, Rule(BOOL))
    # progressive fine-tuning (autoembed/progressive.py): the backbone stays frozen for the first
    # unfreeze_head_pairs training rows, then unfreezes from the top, one layer per unfreeze_layer_pairs rows
    # (0: all at once); both 0 is off
    unfreeze_head_pairs: int = _f(0, Rule(INT, 0, 10**12))
    unfreeze_layer_pairs: int = _f(0, Rule(INT, 0, 10**12))
    # each backbone layer trains at this times the learning rate of the layer above it; 1.0 is off
    layer_lr_decay: float = _f(1.0, Rule(FLOAT, 0.0, 1.0, low_open=True))
    # WiSE-FT: after training, weights = (1 - a) x step-0 weights + a x fine-tuned ones. A float in [0, 1] fixes a;
    # "auto" picks it on validation from MERGE_GRID (the recipe then records the a it picked); null = off
    merge_base: float | str | None = None

    def validate(self, *, file, lines, prefix):
        value = self.merge_base
        if value is None or value == "auto":
            return
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise AutoembedError(
                f"must be a float in the range [0.0, 1.0], 'auto' or null, got {self.merge_base!r}",
                file=file,
                line=lines.get("merge_base"),
                key=prefix + "merge_base",
            )
        self.merge_base = float(value)


@dataclass
class EvaluationConfig(Section):
    """How validation is measured, during training and at its end."""

    k: tuple[int, ...] = (1, 10)
    metric: str = _f("recall@10", Rule(STR))
    every_steps: int | None = _f(None, Rule(INT, 1, 10**9, optional=True))
    # evaluate (and let the pruner judge) each time the run has trained on another N pairs: one grid shared by every
    # trial whatever its batch size, so the pruner compares trials at equal compute (a search keys its trials' curves
    # by training pairs seen)
    every_pairs: int | None = _f(None, Rule(INT, 1, 10**12, optional=True))
    max_queries: int | None = _f(None, Rule(INT, 1, 10**9, optional=True))
    max_corpus: int | None = _f(None, Rule(INT, 1, 10**9, optional=True))
    sample_seed: int = _f(0, Rule(INT))
    # with max_corpus (or interim_corpus): each sampled query's N nearest documents by the base model join the sample
    # before the random fill, so validation measures what the test against the whole corpus does (autoembed/mining.py)
    hard_distractors: int = _f(0, Rule(INT, 0, 1000))
    # the evaluations before a run's last (the curve the pruner judges) measure on a seeded sub-sample of the
    # validation task, this many queries x documents (their answers and hard_distractors nearest first); the last
    # evaluation, the run's value, measures the whole task. Null: every evaluation measures the whole task
    interim_queries: int | None = _f(None, Rule(INT, 1, 10**9, optional=True))
    interim_corpus: int | None = _f(None, Rule(INT, 1, 10**9, optional=True))
    batch_size: int = _f(256, Rule(INT, 1, 65536))

    def validate(self, *, file, lines, prefix):
        if self.every_steps is not None and self.every_pairs is not None:
            raise AutoembedError(
                f"set one of every_steps ({self.every_steps}) and every_pairs ({self.every_pairs}), not both",
                file=file,
                line=lines.get("every_pairs"),
                key=prefix + "every_pairs",
            )
        name, _, k = self.metric.partition("@")
        ok = (name == "recall" and k.isdigit() and int(k) in self.k) or self.metric in ("mrr@10", "ndcg@10")
        if not ok:
            raise AutoembedError(
                f"must be recall@K with K in k={list(self.k)}, or mrr@10 / ndcg@10, got {self.metric!r}",
                file=file,
                line=lines.get("metric"),
                key=prefix + "metric",
            )


@dataclass
class ExportConfig(Section):
    """What the saved model becomes after training (autoembed/export.py); every step is off by default."""

    # keep the fewest principal components of the training texts' embeddings that explain this share of their
    # variance, saved as a Dense layer; null is off
    pca_variance: float | None = _f(None, Rule(FLOAT, 0.0, 1.0, low_open=True, optional=True))
    pca_max_texts: int = _f(20000, Rule(INT, 2, 10**9))
    dtype: str = _f("fp32", Rule(STR, choices=EXPORT_DTYPES))


SECTIONS: dict[str, type[Section]] = {
    "data": DataConfig,
    "architecture": ArchitectureConfig,
    "loss": LossConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
    "export": ExportConfig,
}


@dataclass
class TrialConfig:
    """Everything one training run needs: model, data and every hyperparameter.

    The YAML form (``autoembed train CONFIG.yaml``) has the top-level keys ``model`` and the sections in
    :data:`SECTIONS`; a recipe adds ``provenance``, which training reads only to check the data.
    """

    model: str
    data: DataConfig = field(default_factory=DataConfig)
    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    provenance: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, file: str | None = None) -> TrialConfig:
        if not isinstance(data, dict):
            raise AutoembedError(f"expected a mapping, got {type(data).__name__}", file=file)
        lines = data.lines if isinstance(data, Located) else {}
        file = data.file if isinstance(data, Located) else file
        allowed = ("model", *SECTIONS, "provenance")
        for key in data:
            if key not in allowed:
                raise AutoembedError(
                    f"unknown key {key!r}; expected one of: {', '.join(allowed)}", file=file, line=lines.get(key), key=key
                )
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise AutoembedError(
                f"must name the base model (a folder or package:NAME), got {model!r}", file=file, line=lines.get("model"), key="model"
            )
        sections = {
            name: section.from_dict(data.get(name), file=file, prefix=name + ".") for name, section in SECTIONS.items()
        }
        provenance = data.get("provenance")
        if provenance is not None and not isinstance(provenance, dict):
            raise AutoembedError("must be a mapping", file=file, line=lines.get("provenance"), key="provenance")
        return cls(model=model, provenance=_unlocate(provenance), **sections)

    @classmethod
    def from_yaml_file(cls, path: str | Path) -> TrialConfig:
        return cls.from_dict(load_yaml(path))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        for name in SECTIONS:
            out[name] = getattr(self, name).to_dict()
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def to_yaml_file(self, path: str | Path) -> None:
        from autoembed.fileio import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    def replace(self, **flat: Any) -> TrialConfig:
        """A copy with dotted keys set, e.g. ``replace(**{"training.batch_size": 64})``; validated."""
        data = self.to_dict()
        for key, value in flat.items():
            set_dotted(data, key, value)
        return TrialConfig.from_dict(data)

    def get(self, dotted: str) -> Any:
        section, _, name = dotted.partition(".")
        return getattr(getattr(self, section), name) if name else getattr(self, section)


def projection_input(arch: ArchitectureConfig, hidden_size: int) -> int:
    """The width the output projection reads: a plain adapter's when there is one, else the backbone's (a residual
    adapter keeps it)."""
    return arch.adapter_width if arch.adapter_depth > 0 and not arch.adapter_residual else hidden_size


def embedding_dim(arch: ArchitectureConfig, hidden_size: int) -> int:
    """The size of the embedding a config produces on a backbone of ``hidden_size``."""
    return arch.output_dim if arch.output_dim is not None else projection_input(arch, hidden_size)


def finalize(
    config: TrialConfig, *, hidden_size: int, threads: int | None = None, gpus: float | None = None
) -> tuple[TrialConfig, dict[str, Any]]:
    """The exact config a sampled one trains as, and what was changed to get there.

    The one place where a sample is fitted to where it runs: a projection wider than its input is clamped to
    that width (the search keeps its distribution fixed, so TPE sees a flat region rather than a resample), and
    the trial's CPU thread count is pinned, since it changes float summation order; and the device follows the
    slice (``gpus`` > 0: CUDA, 0: the CPU, whatever the machine has), so ``device: auto`` never trains on a GPU
    that nobody accounted for. What this returns is what the study stores on the trial and what the recipe carries.
    """
    updates: dict[str, Any] = {}
    adjusted: dict[str, Any] = {}
    arch = config.architecture
    width = projection_input(arch, hidden_size)
    if arch.output_dim is not None and arch.output_dim > width:
        updates["architecture.output_dim"] = width
        adjusted["architecture.output_dim"] = {"sampled": arch.output_dim, "effective": width}
    if threads is not None:
        updates["training.threads"] = int(threads)
    if gpus is not None and config.training.device == "auto":
        updates["training.device"] = "cuda" if gpus > 0 else "cpu"
    return (config.replace(**updates) if updates else config), adjusted


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    if not name:
        data[section] = value
        return
    if section not in SECTIONS:
        raise AutoembedError(f"unknown section {section!r}; expected one of: {', '.join(SECTIONS)}", key=key)
    data.setdefault(section, {})[name] = value


# Short names for the keys a search tunes most, so a space's param named ``batch_size`` needs no ``target``.
SHORT_NAMES: dict[str, str] = {
    "output_dim": "architecture.output_dim",
    "attention_heads": "architecture.attention_heads",
    "adapter_depth": "architecture.adapter_depth",
    "adapter_width": "architecture.adapter_width",
    "adapter_activation": "architecture.adapter_activation",
    "pooling": "architecture.pooling",
    "hidden_dropout": "architecture.hidden_dropout",
    "attention_dropout": "architecture.attention_dropout",
    "head_dropout": "architecture.head_dropout",
    "loss": "loss.type",
    "margin": "loss.margin",
    "temperature": "loss.temperature",
    "label_smoothing": "loss.label_smoothing",
    "distance": "loss.distance",
    "backbone_lr": "training.backbone_lr",
    "head_lr": "training.head_lr",
    "warmup_ratio": "training.warmup_ratio",
    "weight_decay": "training.weight_decay",
    "batch_size": "training.batch_size",
    "epochs": "training.epochs",
    "max_steps": "training.max_steps",
    "freeze_layers": "training.freeze_layers",
    "hard_negatives": "data.hard_negatives",
    "classification_weight": "loss.classification_weight",
    "adversarial_weight": "loss.adversarial_weight",
    "unfreeze_head_pairs": "training.unfreeze_head_pairs",
    "unfreeze_layer_pairs": "training.unfreeze_layer_pairs",
    "layer_lr_decay": "training.layer_lr_decay",
    "augment_delete_rate": "data.augment_delete_rate",
    "augment_swap_rate": "data.augment_swap_rate",
    "mining_max_score_ratio": "data.mining_max_score_ratio",
    "mining_margin": "data.mining_margin",
}


def config_keys() -> list[str]:
    """Every dotted key a config has, e.g. ``training.batch_size``."""
    return ["model"] + [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _unlocate(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unlocate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unlocate(v) for v in value]
    return value

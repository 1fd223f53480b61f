"""One training run: a fixed config in, a fine-tuned model and its validation metrics out.

Training knows nothing of Optuna or Ray. It hands every evaluation to a :class:`Reporter` and stops when
the reporter says so; the search plugs its pruner in there, a recipe run plugs in nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from autoembed.config import TrialConfig, embedding_dim
from autoembed.data import Dataset, Example, RetrievalTask, load_dataset, retrieval_task, sub_task, synonym_pairs
from autoembed.errors import AutoembedError, TrialFailed
from autoembed.evaluation import RetrievalEvaluator, TokenCache, device_tokens, to_device
from autoembed.losses import Batch, compute_loss
from autoembed.mining import BaseEmbeddings, Mined, mine_scored, mining_pool, pca_basis, pca_texts
from autoembed.model import (
    BackboneInfo,
    backbone_info,
    build_model,
    freeze_lowest_layers,
    load_encoder,
    parameter_groups,
)
from autoembed.progressive import layer_lr_chunks
from autoembed.techniques import Techniques

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where training sends its evaluations, and who may tell it to stop."""

    def start(self, total_steps: int) -> None: ...

    def report(self, step: int, metrics: dict[str, float], *, pairs: int) -> None:
        """One evaluation at optimizer ``step``, after ``pairs`` training pairs (a point of the every_pairs grid)."""
        ...

    def should_stop(self) -> bool: ...


class NullReporter:
    def start(self, total_steps: int) -> None:
        pass

    def report(self, step: int, metrics: dict[str, float], *, pairs: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False


@dataclass
class Prepared:
    """What trials of one study share: the data, the validation task, the tokenized texts, the backbone."""

    dataset: Dataset
    val_task: RetrievalTask
    cache: TokenCache
    info: BackboneInfo
    key: tuple
    # query text -> mined negatives, hardest first, ``mined`` of them at most (autoembed/mining.py)
    negatives: dict[str, tuple[str, ...]] = field(default_factory=dict)
    mined: int = 0
    # the candidates behind ``negatives`` with their base scores, for the positive-aware filter (data.mining_*)
    mining: Mined = field(default_factory=Mined)
    # the base model's principal directions, for projections that start from them (architecture.projection_init)
    pca: torch.Tensor | None = None
    # what the interim evaluations measure (evaluation.interim_*): a sub-sample of val_task, or None for val_task
    interim_task: RetrievalTask | None = None


def prepare_key(config: TrialConfig) -> tuple:
    """What a :class:`Prepared` depends on. Paths count resolved: the search prepares once in the driver with the
    paths as the user gave them, and Ray workers get them absolute (their cwd differs); both must match, or every
    trial would read, tokenize and encode everything again."""
    d, e = config.data, config.evaluation

    def where(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else path

    model = model_key(config.model)
    return (
        model, where(d.train), where(d.val), where(d.corpus), d.val_fraction, d.split_seed, d.max_seq_length,
        e.max_queries, e.max_corpus, e.sample_seed, e.hard_distractors, tuple(where(p) for p in d.extra_train or ()),
        e.interim_queries, e.interim_corpus,
    )


def model_key(ref: str) -> str:
    """A model reference as :func:`prepare_key` counts it (a folder resolved, a package name as it is)."""
    return ref if ref.startswith("package:") else str(Path(ref).resolve())


def prepared_for(prepared: Prepared | dict[str, Prepared] | None, config: TrialConfig) -> Prepared | None:
    """What a search prepared for ``config``'s base model: one Prepared, or one per base model (keyed by
    :func:`model_key`) when the space searches the model."""
    if isinstance(prepared, dict):
        return prepared.get(model_key(config.model))
    return prepared


def needs_pca(config: TrialConfig) -> bool:
    arch = config.architecture
    return arch.projection_init == "pca" and arch.output_dim is not None


def prepare(config: TrialConfig, *, mine: int = 0, pca: bool = False) -> Prepared:
    """Read the data, build the validation task and tokenize every text once.

    With ``data.hard_negatives`` (or ``mine``, the most any trial of a search may ask for) above 0, the base
    model mines that many negatives per training query, once, for every trial that shares this. With ``pca`` (or a
    config whose projection starts from the PCA) it computes the base model's principal directions, once.
    """
    from transformers import AutoTokenizer

    info = backbone_info(config.model)
    d, e = config.data, config.evaluation
    dataset = load_dataset(d.train, d.val, d.corpus, val_fraction=d.val_fraction, split_seed=d.split_seed, extra_train=d.extra_train)
    _check_kinds(dataset.train, config)
    tokenizer = AutoTokenizer.from_pretrained(str(info.transformer_path), local_files_only=True)
    depth = max(d.hard_negatives, mine)
    base = None
    pca = pca or needs_pca(config)
    if depth or pca or (e.hard_distractors and (e.max_corpus or e.interim_corpus)):
        encoder = load_encoder(config.model, device=resolve_device(config.training.device))
        base = BaseEmbeddings(encoder, tokenizer, d.max_seq_length)
    task = retrieval_task(
        dataset.val,
        dataset.corpus,
        extra_documents=[ex.positive for ex in dataset.train] if dataset.corpus is None else (),
        max_queries=e.max_queries,
        max_corpus=e.max_corpus,
        seed=e.sample_seed,
        distractors=e.hard_distractors,
        nearest=base.nearest if base is not None else None,
    )
    if not task.queries:
        raise AutoembedError("validation has no queries with a positive", file=d.val or d.train)
    interim = None
    if e.interim_queries or e.interim_corpus:
        near = base.nearest if base is not None else None
        interim = sub_task(task, e.interim_queries, e.interim_corpus, seed=e.sample_seed, distractors=e.hard_distractors, nearest=near)
        if (len(interim.queries), len(interim.corpus)) == (len(task.queries), len(task.corpus)):
            interim = None  # no smaller than the task: evaluate the task itself
    texts = [t for ex in dataset.train for t in (ex.anchor, ex.positive, *ex.negatives)]
    pool = mining_pool(dataset.train, dataset.corpus) if depth else []
    mining = mine_scored(base, dataset.train, pool, depth) if depth else Mined()
    negatives = mining.select(depth)
    basis = pca_basis(base(pca_texts(dataset.train))) if pca else None
    if base is not None:
        log.info("base model encoded %d texts in %.1f s for mining and the validation sample", len(base.rows), base.seconds)
    mined_texts = {t for negs in mining.negatives.values() for t in negs}
    cache = TokenCache.build(tokenizer, [*texts, *task.queries, *task.corpus, *sorted(mined_texts)], d.max_seq_length)
    return Prepared(dataset, task, cache, info, prepare_key(config), negatives, depth, mining, basis, interim)


def _check_kinds(examples: list[Example], config: TrialConfig) -> None:
    labeled = sum(ex.label is not None for ex in examples)
    if labeled and labeled != len(examples):
        raise AutoembedError("training file mixes labeled pairs (text1/text2/label) with other rows", file=config.data.train)
    if labeled and config.data.hard_negatives:
        raise AutoembedError("labeled pairs (text1/text2/label) cannot take mined negatives; set data.hard_negatives to 0", key="data.hard_negatives")
    if labeled and config.data.synonym_pairs:
        raise AutoembedError("labeled pairs (text1/text2/label) have no queries to pair as synonyms; set data.synonym_pairs to 0", key="data.synonym_pairs")
    if labeled and config.loss.type != "contrastive":
        raise AutoembedError(
            f"labeled pairs (text1/text2/label) train with loss.type 'contrastive', got {config.loss.type!r}", key="loss.type"
        )


@dataclass
class TrainResult:
    metrics: dict[str, float]
    history: list[tuple[int, dict[str, float]]]
    steps: int
    total_steps: int
    value: float
    value_step: int
    seconds: float
    stopped: bool
    model: object = field(repr=False)
    prepared: Prepared | None = field(default=None, repr=False)  # what export fits PCA on and evaluates with
    # training.merge_base: the weight of the fine-tuned model it kept, and each tried weight's validation value
    merge_alpha: float | None = None
    merge_scores: dict[str, float] = field(default_factory=dict)
    value_pairs: int | None = None  # training pairs seen at the value's evaluation (its key in a search's curve)


def trial_value(history: list[tuple[int, dict[str, float]]], metric: str) -> tuple[float, int]:
    """The one definition of a run's value: the metric at its last evaluation, and that step.

    The study records it, the recipe keeps the step, and training from the recipe runs to that step and
    measures there; the best of several noisy evaluations would be biased upward and could not be rebuilt.
    """
    if not history:
        raise ValueError("no evaluation yet")
    step, metrics = history[-1]
    return metrics[metric], step


# the weights of the fine-tuned model that training.merge_base: auto tries (1.0 is the run's own last evaluation)
MERGE_GRID = (0.3, 0.5, 0.7, 0.9, 1.0)


def merge_weights(model, start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> None:
    """Load ``(1 - alpha) * start + alpha * tuned`` into ``model`` (WiSE-FT). ``torch.lerp`` gives exactly ``start``
    at 0 and exactly ``tuned`` at 1."""
    merged = {k: torch.lerp(start[k], v, alpha) if v.is_floating_point() else v for k, v in tuned.items()}
    model.load_state_dict(merged)


def merge_with_base(model, start: dict[str, torch.Tensor], setting: float | str, evaluate, metric: str, last: dict[str, float]):
    """Apply ``training.merge_base`` after training: the fixed weight, or the best of :data:`MERGE_GRID` on
    validation (ties go to the larger weight). Returns (alpha, its metrics, every tried alpha's value)."""
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grid = MERGE_GRID if setting == "auto" else (float(setting),)
    tried: dict[float, dict[str, float]] = {}
    for alpha in grid:
        if alpha == 1.0:
            tried[alpha] = last
            continue
        merge_weights(model, start, tuned, alpha)
        tried[alpha] = evaluate(model)
    alpha = max(tried, key=lambda a: (tried[a][metric], a))
    merge_weights(model, start, tuned, alpha)
    return alpha, tried[alpha], {f"{a:g}": m[metric] for a, m in tried.items()}


def total_steps(config: TrialConfig, n_train: int) -> int:
    t = config.training
    per_epoch = max(1, n_train // t.batch_size + (1 if n_train % t.batch_size >= 2 else 0))
    return t.max_steps if t.max_steps is not None else max(1, math.ceil(t.epochs * per_epoch))


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _optimizer(model, config: TrialConfig, extra: list[tuple[list, float, str]] = ()) -> torch.optim.Optimizer:
    t = config.training
    backbone, head = parameter_groups(model)
    groups = []
    for params, lr, name in (*layer_lr_chunks(model, backbone, t.backbone_lr, t.layer_lr_decay), (head, t.head_lr, "head"), *extra):
        decay = [p for n, p in params if p.ndim > 1 and "norm" not in n.lower()]
        no_decay = [p for n, p in params if not (p.ndim > 1 and "norm" not in n.lower())]
        groups.append({"params": decay, "lr": lr, "weight_decay": t.weight_decay, "name": name})
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": name + "_no_decay"})
    groups = [g for g in groups if g["params"]]
    if not groups:
        return None
    # the fused kernel is about 7x faster than the per-parameter loop on CPU (80 ms a step for MiniLM-L6), and
    # as deterministic; sentence-transformers' trainer uses it by default
    fused = groups[0]["params"][0].device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, fused=fused)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AutoembedError(f"device {name!r} asked for but CUDA is not available", key="training.device")
    return torch.device(name)


def _batches(examples: list[Example], batch_size: int, seed: int):
    """Endless seeded epochs of row-index batches; a trailing batch of one row is dropped."""
    epoch = 0
    while True:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(examples), generator=gen).tolist()
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            if len(rows) >= 2:
                yield rows
        epoch += 1


# On CPU a training batch is encoded in length-sorted pieces of this many texts, each padded to its own longest
# text: the batch (and so its in-batch negatives and its loss) is unchanged, but far fewer pad tokens are computed
# (ICD-10 texts average 12 tokens, while a random batch of 128 pads to about 31). CUDA encodes the batch whole.
CPU_PIECE = 32


def _embed(model, cache: TokenCache, idx: list[int], device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return model(device_tokens(cache, device).features(idx))["sentence_embedding"]
    if device.type != "cpu" or len(idx) <= CPU_PIECE:
        return model(cache.features(idx, device))["sentence_embedding"]
    order = np.argsort(-cache.lengths(idx), kind="stable")
    pieces = [
        model(cache.features([idx[r] for r in order[start : start + CPU_PIECE]], device))["sentence_embedding"]
        for start in range(0, len(order), CPU_PIECE)
    ]
    return torch.cat(pieces)[torch.from_numpy(np.argsort(order, kind="stable")).to(device)]


# On CUDA the step loop does not wait for the GPU: reading a value back (``float(loss)``, ``if isfinite(loss)``) lets
# the card run dry every step, and the host then pays about 40 ms a step whatever the batch (measured on an H200).
# So there the loss is checked on the device, and read back every this many steps and before each evaluation.
SYNC_EVERY = 50


class _LossWatch:
    """Non-finite losses on a CUDA device: the first bad step and its loss are kept on the card, read every
    :data:`SYNC_EVERY` steps (and at step 1 and before each evaluation); a bad one fails the trial with the step it
    happened at. ``progress`` gets, every step, the loss as last read."""

    def __init__(self, device: torch.device, total: int, progress: Callable[[int, int, float], None] | None):
        self.total, self.progress = total, progress
        self.first_bad = torch.zeros((), dtype=torch.float64, device=device)  # 0: every loss so far is finite
        self.bad_loss = torch.zeros((), dtype=torch.float64, device=device)
        self.loss = torch.full((), math.nan, dtype=torch.float64, device=device)
        self.seen = math.nan

    def step(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().double()
        bad = ~torch.isfinite(loss) & (self.first_bad == 0)
        self.first_bad = torch.where(bad, float(step), self.first_bad)
        self.bad_loss = torch.where(bad, loss, self.bad_loss)
        self.loss = loss
        if step == 1 or step % SYNC_EVERY == 0:
            self.check()
        if self.progress is not None:
            self.progress(step, self.total, self.seen)

    def check(self) -> None:
        first, bad, self.seen = torch.stack([self.first_bad, self.bad_loss, self.loss]).tolist()  # one read
        if first:
            raise TrialFailed(f"loss is {bad} at step {int(first)}")

    def before(self, evaluate: Callable):
        """``evaluate``, after checking the losses since the last read: no evaluation reports a diverged run."""

        def checked(model):
            self.check()
            return evaluate(model)

        return checked


def train(
    config: TrialConfig,
    *,
    prepared: Prepared | None = None,
    reporter: Reporter | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune the model ``config`` describes; evaluate every ``evaluation.every_steps`` and at the end.

    ``training.threads`` applies to this run only: the caller's torch thread count is restored after.
    """
    threads = torch.get_num_threads()
    try:
        return _train(config, prepared=prepared, reporter=reporter, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    config: TrialConfig,
    *,
    prepared: Prepared | None = None,
    reporter: Reporter | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune the model ``config`` describes; evaluate every ``evaluation.every_steps`` and at the end."""
    started = time.perf_counter()
    reporter = reporter or NullReporter()
    t = config.training
    if t.threads:
        torch.set_num_threads(t.threads)
    if (
        prepared is None
        or prepared.key != prepare_key(config)
        or prepared.mined < config.data.hard_negatives
        or (needs_pca(config) and prepared.pca is None)
    ):
        if prepared is not None:
            log.warning("the shared data does not fit this config (its data, validation or mining differ); preparing again")
        prepared = prepare(config)
    device = resolve_device(t.device)
    cache, train_rows = prepared.cache, prepared.dataset.train
    _check_kinds(train_rows, config)
    # synonym pairs join per trial (every text is a training query, already tokenized), so the ratio is searchable
    synonyms = synonym_pairs(train_rows, config.data.synonym_pairs, config.data.split_seed)
    if synonyms:
        log.info("data.synonym_pairs: %d query -> query pairs join %d rows", len(synonyms), len(train_rows))
        train_rows = train_rows + synonyms
    if len(train_rows) < 2:
        raise AutoembedError("training needs at least 2 rows", file=config.data.train)

    model = build_model(config, device=device, info=prepared.info, pca=prepared.pca)
    freeze_lowest_layers(model, t.freeze_layers)
    model.train()
    if t.compile:
        # the backbone only, with dynamic shapes (every batch pads to its own longest text); it pays on CUDA, where
        # fusing kernels cuts the per-op launch cost that bounds small models, and costs a compile per process
        model[0].auto_model.compile(dynamic=True)
    # WiSE-FT interpolates towards the step-0 weights: the base model's, and heads as they started
    start = {k: v.detach().clone() for k, v in model.state_dict().items()} if t.merge_base is not None else None
    techniques = Techniques(
        config, model, train_rows, dim=embedding_dim(config.architecture, prepared.info.hidden_size), device=device,
        embed=lambda texts, idx: _embed(model, texts, idx, device),
    )
    optimizer = _optimizer(model, config, techniques.param_chunks())
    techniques.start()
    total = total_steps(config, len(train_rows))
    warmup = round(t.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(warmup, total))
    ev = config.evaluation
    evaluator = RetrievalEvaluator(prepared.val_task, cache, ev.k, primary_metric=ev.metric, batch_size=ev.batch_size)
    # the curve (and the pruner) on the interim sub-sample, when there is one; the value on the whole task
    interim = RetrievalEvaluator(prepared.interim_task, cache, ev.k, primary_metric=ev.metric, batch_size=ev.batch_size) if prepared.interim_task else None
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision) if device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype is torch.float16 else None
    if t.precision != "fp32" and device.type != "cuda":
        log.warning("training.precision %s applies on CUDA only; training in fp32 on %s", t.precision, device)

    index = cache.index
    n_mined = config.data.hard_negatives
    d = config.data
    mined = prepared.mining.select(n_mined, max_score_ratio=d.mining_max_score_ratio, margin=d.mining_margin) if n_mined else {}

    def negatives(ex: Example) -> tuple[str, ...]:
        return ex.negatives + mined[ex.anchor][:n_mined] if mined else ex.negatives

    # on CUDA losses are checked on the device (_LossWatch), which calls progress; on CPU every step, as always
    watch = _LossWatch(device, total, progress) if device.type == "cuda" else None
    if watch is not None:
        evaluator, progress = watch.before(evaluator), None
        interim = watch.before(interim) if interim is not None else None

    def ids(values: list) -> torch.Tensor:
        return to_device(values, device) if device.type == "cuda" else torch.tensor(values, device=device)

    reporter.start(total)
    torch.manual_seed(t.seed)
    history: list[tuple[int, dict[str, float]]] = []
    every = config.evaluation.every_steps
    grid = config.evaluation.every_pairs
    history_pairs: list[int] = []
    stopped = False
    step = pairs_seen = 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for rows in _batches(train_rows, t.batch_size, t.seed):
        if step >= total:
            break
        techniques.before_step(pairs_seen)
        pairs_seen += len(rows)
        examples = [train_rows[r] for r in rows]
        a_idx = [index[ex.anchor] for ex in examples]
        p_idx = [index[ex.positive] for ex in examples]
        row_negs = [negatives(ex) for ex in examples]
        n_idx = [index[n] for negs in row_negs for n in negs]
        owner = [i for i, negs in enumerate(row_negs) for _ in negs]
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            anchors = techniques.embed_anchors(examples, step) if techniques.augments else _embed(model, cache, a_idx, device)
            cands = _embed(model, cache, p_idx + n_idx, device)
            batch = Batch(
                anchors=anchors.float(),
                positives=cands[: len(p_idx)].float(),
                anchor_ids=ids(a_idx),
                positive_ids=ids(p_idx),
                negatives=cands[len(p_idx) :].float() if n_idx else None,
                negative_ids=ids(n_idx) if n_idx else None,
                neg_owner=ids(owner) if n_idx else None,
                labels=ids([ex.label for ex in examples]) if examples[0].label is not None else None,
            )
            loss = compute_loss(config.loss, batch)
            if techniques.adds_loss:
                loss = loss + techniques.extra_loss(examples, batch.anchors, batch.positives, step)
        if watch is not None:
            watch.step(loss, step + 1)
        elif not torch.isfinite(loss):
            raise TrialFailed(f"loss is {loss.item()} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if t.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        step += 1
        if progress is not None:
            progress(step, total, float(loss.detach()))
        on_grid = bool(grid) and pairs_seen // grid > (history_pairs[-1] // grid if history_pairs else 0)
        if (every and step % every == 0) or on_grid or step == total:
            metrics = (interim or evaluator)(model)
            history.append((step, metrics))
            # a grid evaluation is keyed by its grid point, so trials of any batch size share the keys
            fidelity = pairs_seen // grid * grid if on_grid else pairs_seen
            history_pairs.append(fidelity)
            reporter.report(step, metrics, pairs=fidelity)
            if step < total and reporter.should_stop():
                stopped = True
                break
            if step == total and interim is not None:
                # the curve ends on the interim sample like every other trial's; the value is the whole task's
                history.append((step, evaluator(model)))
                history_pairs.append(fidelity)
    value, value_step = trial_value(history, config.evaluation.metric)
    metrics, alpha, scores = history[-1][1], None, {}
    if start is not None and not stopped:
        alpha, metrics, scores = merge_with_base(model, start, t.merge_base, evaluator, config.evaluation.metric, metrics)
        value = metrics[config.evaluation.metric]
        log.info("merged with the base model at weight %g: %s = %.4f (tried %s)", alpha, config.evaluation.metric, value, scores)
    return TrainResult(
        metrics=metrics,
        history=history,
        steps=step,
        total_steps=total,
        value=value,
        value_step=value_step,
        seconds=time.perf_counter() - started,
        stopped=stopped,
        model=model,
        prepared=prepared,
        merge_alpha=alpha,
        merge_scores=scores,
        value_pairs=history_pairs[-1],
    )

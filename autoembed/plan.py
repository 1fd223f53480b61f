"""The budget plan: with ``--timeout``, measure this machine, then set what the user left unset so the time fits.

A search that evaluates the whole validation set every 100 steps, on trials as long as an expert's, runs a handful
of trials in an hour on a CPU and never gets past its random start-up. So before the study starts, the plan
times a few training steps and an encoding pass on the user's own data and model, and sets:

- a validation sample (``evaluation.max_queries`` x ``max_corpus``, with each query's nearest distractors by the
  base model, ``hard_distractors``) for a trial's value, as large as 5% of a typical trial pays for (at least 600 x
  5,000; the whole set when it fits). Every evaluation on the grid measures it too, so the pruner judges a trial
  on what its value will be measured on (sessions 8-9 planned a smaller interim sub-sample; see FINAL_SHARE).
  When the space may sample mined negatives and the corpus is sampled, the value measures twice the documents and
  the grid that sample as an interim sub-sample (``evaluation.interim_corpus``; see MINED_CORPUS);
- the evaluation grid (``evaluation.every_pairs``) such that evaluating costs at most 15% of a trial, with at least
  three evaluations (the pruner judges from the first past a quarter of a trial and never prunes at the last);
- the trial length (``training.epochs``) such that about 12 trials fit, when nothing in the space sets it;
- the pruner's start-up count and warm-up (``n_startup_trials``, ``n_warmup_steps``: the grid points within the
  first quarter of a typical trial are not judged), when the space leaves them out;
- TPE's random start-up (``sampler.n_startup_trials``: the starting points, one random trial, then TPE, or a third
  of the trials that fit, at most Optuna's default of 10), when the space leaves it out.

Anything the space (``fixed``, a param's target, the pruner spec) or the study YAML's ``base`` sets wins. Without
``--timeout`` the plan only sets an evaluation grid, from the data's size, when none is set. The plan is stored
on the study, and a driver that joins or resumes the study reuses it, so every trial measures the same way.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autoembed.config import LossConfig, TrialConfig
from autoembed.data import load_dataset
from autoembed.evaluation import TokenCache, encode
from autoembed.losses import Batch, compute_loss
from autoembed.model import BackboneInfo, build_model
from autoembed.space import SearchSpace
from autoembed.training import _embed, _optimizer, resolve_device

EVAL_SHARE = 0.15  # evaluation may cost at most this share of a trial
TARGET_TRIALS = 12  # what the trial length aims at, counting pruned trials
WARN_TRIALS = 6
# with a pruner, the trials of its start-up run to the end, and of the later ones about this share is stopped at the
# first grid point the pruner judges (past its warm-up: warmup_pairs), so a stopped trial's share of a full one follows
# the grid (cost_share). The median rule stops a trial below the median of earlier ones: about half when TPE's
# samples are no better than those before. Until session 11 the plan took two thirds of all trials to stop, and
# promised ~11 trials where 7 ran (6 complete: 3 of them the start-up; session 10, benchmarks/pruning_budget.py).
# Stopped share past the start-up in the runs here: 1 of 4 (session 10), 5 of 5 (session 9, default space), 3 of 3.
PRUNED_SHARE = 1 / 2
# the validation sample a trial's value is measured on: at least this (when validation is larger), more when
# FINAL_SHARE of a typical trial's training pays for it (validation_sample); its documents are the queries' answers,
# then their nearest by the base model (nearest_first)
VAL_QUERIES, VAL_CORPUS = 600, 5000
FINAL_SHARE = 0.05
# Sessions 8-9 planned an interim sub-sample of the value's sample for the grid's evaluations (200 x 1,000, then
# 400 x 2,000 here), so that a finer grid fitted. It misled the pruner: on the six trials of an unpruned ICD-10
# search (benchmarks/pruning_curves.py) its scores ordered the trials as their values did with Spearman's rho
# between -0.46 and 0.34 at every grid point; the value's own sample, 0.88 from 29% of a trial on. The plan no
# longer sets one (``evaluation.interim_*`` set by a user still work).
MIN_EVALS = 3  # the first at most a third into a trial, a second judged point, the last (see evaluations)
GRID_UNIT = 256
# the pruner judges no trial before this share of a typical one (warmup_pairs): at 14% of an ICD-10 trial, in its
# learning-rate warm-up, the value sample ordered six trials as their values did with rho -0.03; at 29%, 0.88
WARMUP_SHARE = 0.25
# when the space may sample mined negatives and the plan samples the corpus: a trial's value (its last evaluation)
# measures this many times the documents, and the grid the sample it would otherwise have (as an interim sub-sample,
# nearest first). A nearest-first sample holds the base model's nearest documents, what mined negatives train against,
# and favours such trials: on ICD-10, over twelve trained models three of them with mined negatives, 1,213 x 14,000
# ordered them as the test with Spearman's rho 0.48, 20,000 documents 0.74, 28,000 0.83, the whole set 0.88; the
# default search's three starting points ordered as on the whole set from 20,000 on, where 12,676 put the mined twin
# first and its pick tied the hand pick on test recall@10 (session 11, benchmarks/validation_fidelity.py)
MINED_CORPUS = 2


@dataclass
class Plan:
    """What the plan sets (dotted config keys for every trial, pruner arguments) and why, in one line."""

    updates: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)
    line: str = ""
    warnings: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    # the base-model screen (autoembed.screening.Screening.to_dict) when the space searches the model
    screen: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"updates": self.updates, "pruner": self.pruner, "line": self.line, "measured": self.measured}
        return out | ({"sampler": self.sampler} if self.sampler else {}) | ({"screen": self.screen} if self.screen else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(
            dict(data.get("updates") or {}), dict(data.get("pruner") or {}), str(data.get("line") or ""), [],
            dict(data.get("measured") or {}), dict(data.get("sampler") or {}), dict(data.get("screen") or {}),
        )  # fmt: skip

    def apply(self, base: TrialConfig, space: SearchSpace) -> TrialConfig:
        """The base config with the plan's keys, and the space's pruner and sampler with their arguments; with a
        screen, the space searches the models it kept and the base config takes the best."""
        space.pruner.update(self.pruner)
        if self.sampler and space.sampler.type == "tpe":
            space.sampler = space.sampler.model_copy(update=self.sampler)
        if self.screen and space.model_param is not None:
            space.keep_models(self.screen["kept"])
            base = base.replace(model=self.screen["kept"][0])
        return base.replace(**self.updates) if self.updates else base


def evaluations(train_seconds: float, eval_seconds: float, final_seconds: float = 0.0) -> int:
    """Evaluations per trial: their cost at most EVAL_SHARE of the trial's, at most 20, and at least MIN_EVALS.

    ``eval_seconds`` is one evaluation on the grid; ``final_seconds`` what the end adds (the whole validation sample,
    when the grid measures an interim sub-sample a user set). The pruner never judges a trial's last evaluation
    (its value) nor one within its warm-up (warmup_pairs); three put the first a third into a trial, past the
    warm-up, and a second at two thirds. With two (as planned until session 6) a 14-minute ICD-10 search ran 6
    trials and the median pruner could prune none of them.
    """
    room = EVAL_SHARE / (1 - EVAL_SHARE) * train_seconds - final_seconds
    return max(MIN_EVALS, min(20, math.floor(room / max(eval_seconds, 1e-6))))


def validation_sample(n_queries: int, n_docs: int, texts: float) -> tuple[int, int]:
    """How many of the ``n_queries`` validation queries and ``n_docs`` documents a trial's value measures, for about
    ``texts`` texts encoded (at least VAL_QUERIES + VAL_CORPUS): the whole set when it fits, else queries and
    documents in the proportion of VAL_QUERIES to VAL_CORPUS, what one side leaves going to the other.

    Until session 9 the sample was 600 x 5,000 whatever the trials cost. On ICD-10, filled nearest first
    (nearest_first), 1,213 x 14,000 (5% of a default-space trial there) ordered nine trained models as the test does
    with Spearman's rho 0.97, against 0.90 for 600 x 5,000 (benchmarks/validation_fidelity.py)."""
    budget = max(VAL_QUERIES + VAL_CORPUS, int(texts))
    if n_queries + n_docs <= budget:
        return n_queries, n_docs
    queries = min(n_queries, max(VAL_QUERIES, round(budget * VAL_QUERIES / (VAL_QUERIES + VAL_CORPUS))))
    docs = min(n_docs, budget - queries)
    return min(n_queries, budget - docs), docs


def nearest_first(queries: int, docs: int) -> int:
    """``evaluation.hard_distractors`` for a sample of ``docs`` documents for ``queries`` queries: enough of each
    query's nearest (rank by rank, so every query gets its nearest first; twice the documents per query, since
    neighbours overlap) that the sample is all answers and near documents, no random fill, at most 100.

    A random fill is documents no model ranks near a query: on ICD-10, 600 x 5,000 with 3 nearest each and a random
    fill ordered nine trained models as the test does with Spearman's rho 0.62 (81% of pairs); filled nearest first,
    0.90 (98%); 1,213 x 14,000, 0.58 against 0.97 (benchmarks/validation_fidelity.py). It favours trials with mined
    negatives (the base model's nearest wrong texts, what such a sample holds): with three such models among twelve,
    1,213 x 14,000 nearest first ordered them with rho 0.48, 28,000 documents 0.83, the whole set 0.88 (session 11)."""
    return max(1, min(100, 2 * math.ceil(docs / max(1, queries))))


def mines(space: SearchSpace, base: TrialConfig) -> bool:
    """Whether a trial of the space may train with mined negatives (``data.hard_negatives`` above 0)."""
    most = space.largest("data.hard_negatives")
    return (base.data.hard_negatives if most is None else most) > 0


def warmup_pairs(pairs: float, grid: float) -> int:
    """The pruner's warm-up in training pairs: the last grid point within WARMUP_SHARE of a typical trial, 0 when
    the first point is past it. Earlier the learning rate is still warming up (up to 0.2 of a trial in the shipped
    spaces), and a trial whose warm-up is longer would be judged against others' at a different point of their
    schedules. Until session 10 the first grid point was never judged, however late it came: with the three
    evaluations of a trial that evaluates its value sample that left one judgement, two thirds into a trial."""
    return int(math.floor(WARMUP_SHARE * pairs / grid) * grid)


def cost_share(prunes: bool, pairs: float, grid: float | None, warmup: float | None = None) -> float:
    """The average cost of a trial past the pruner's start-up as a share of a full one (``pairs`` long, evaluated
    every ``grid`` pairs and at its end): without a pruner 1; with one, PRUNED_SHARE of them stop at the first
    evaluation past the pruner's ``warmup`` (None: the first grid point, so the second evaluation) and the rest run
    to the end, or all run to the end when no evaluation before the last is left to judge them at.

    Until session 7 the plan took a pruned trial to stop at 0.3 of its length whatever the grid; with the three
    evaluations a short trial gets it cannot stop before about two thirds, so fewer trials ran than the plan said
    (ICD-10, 14 minutes: ~12 planned, 6 ran).
    """
    if not prunes or not grid or math.ceil(pairs / grid) < MIN_EVALS:
        return 1.0
    stop = (int((grid if warmup is None else warmup) // grid) + 1) * grid
    return 1 - PRUNED_SHARE + PRUNED_SHARE * min(1.0, stop / pairs)


def trials_cost(n: float, share: float, startup: int) -> float:
    """What ``n`` trials cost in full trials when the first ``startup`` run to the end (the pruner's start-up) and
    each later one costs ``share`` of a full one on average (cost_share)."""
    return min(n, startup) + max(0.0, n - startup) * share


def trials_fit(budget: float, share: float, startup: int) -> float:
    """How many trials fit in ``budget`` full trials' time: the inverse of trials_cost."""
    return budget if budget <= startup else startup + (budget - startup) / share


def startup_trials(fits: float) -> int:
    """The median pruner's start-up the plan sets: a quarter of the trials that fit, 2 to 5."""
    return max(2, min(5, round(fits / 4)))


def user_sets(key: str, space: SearchSpace, base_sections: dict[str, Any]) -> bool:
    """Whether the space (fixed or a param's target) or the study's ``base`` sets config key ``key``."""
    section, _, name = key.partition(".")
    if key in space.fixed or any(p.target == key for p in space.params.values()):
        return True
    return name in (base_sections.get(section) or {})


def make_plan(
    space: SearchSpace, base: TrialConfig, info: BackboneInfo, *, timeout: float | None, base_sections: dict[str, Any]
) -> Plan:
    """Measure (when there is a time budget) and decide; see the module docstring."""
    plan = Plan()
    ev, d = base.evaluation, base.data
    free = {key: not user_sets(key, space, base_sections) for key in _KEYS}
    grid_free = free["evaluation.every_pairs"] and free["evaluation.every_steps"]
    dataset = load_dataset(d.train, d.val, d.corpus, val_fraction=d.val_fraction, split_seed=d.split_seed, extra_train=d.extra_train)
    n_train = len(dataset.train)
    n_queries = len({ex.anchor for ex in dataset.val})
    n_docs = len(dataset.corpus) if dataset.corpus is not None else len({ex.positive for ex in (*dataset.train, *dataset.val)})
    epochs = _typical(space, "training.epochs", base.training.epochs)
    batch = int(_typical(space, "training.batch_size", base.training.batch_size))
    steps = _typical(space, "training.max_steps", base.training.max_steps)
    pairs = steps * batch if steps else epochs * n_train
    if timeout is None:
        if grid_free:
            plan.updates["evaluation.every_pairs"] = _round_up(max(pairs / 4, GRID_UNIT))
            plan.line = f"no --timeout: evaluate every {plan.updates['evaluation.every_pairs']:,} training pairs"
        return plan

    speed = measure(base, info, dataset, batches=[min(b, max(2, n_train)) for b in batch_choices(space, batch)])
    # a mined negative is one more text to encode per pair: a trial with n of them takes about (2 + n) / 2 times as
    # long per pair (ICD-10: 29 against 41 pairs/s at batch 16 with one); averaged over what the space may sample
    negatives = [v for v in space.possible("data.hard_negatives") if isinstance(v, int)] or [base.data.hard_negatives]
    factor = statistics.mean((2 + n) / 2 for n in negatives)
    if factor != 1:
        speed = speed | {"train_pairs_per_s": round(speed["train_pairs_per_s"] / factor, 2), "mined_negatives_factor": round(factor, 3)}
    # and the data's size, so a trial's own length can be predicted from its config (predict_seconds)
    plan.measured = speed | {"train_rows": n_train, "val_queries": n_queries, "val_docs": n_docs}
    rate = speed["encode_texts_per_s"]

    # the validation sample: what the user set (in the space or the base; a space's wins), else as large as
    # FINAL_SHARE of a typical trial's training pays for (at least VAL_QUERIES x VAL_CORPUS, the whole validation set
    # when it fits), since a trial's value is what the search picks by; the grid's evaluations measure it too
    queries = _typical(space, "evaluation.max_queries", ev.max_queries) or n_queries
    docs = _typical(space, "evaluation.max_corpus", ev.max_corpus) or n_docs
    if free["evaluation.max_queries"] and free["evaluation.max_corpus"]:
        est_train = pairs / speed["train_pairs_per_s"]
        if free["training.epochs"] and free["training.max_steps"]:  # the plan may shorten trials below
            est_train = min(est_train, timeout * (1 - EVAL_SHARE) / TARGET_TRIALS)
        queries, docs = validation_sample(n_queries, n_docs, FINAL_SHARE * est_train * rate)
        interim_free = free["evaluation.interim_queries"] and free["evaluation.interim_corpus"]
        grid_docs = None
        if docs < n_docs and interim_free and free["evaluation.hard_distractors"] and mines(space, base):
            # the value on MINED_CORPUS x the documents, the grid on the sample it would have had
            grid_docs, docs = docs, min(n_docs, MINED_CORPUS * docs)
            plan.updates["evaluation.interim_corpus"] = grid_docs
        if queries < n_queries:
            plan.updates["evaluation.max_queries"] = queries
        if docs < n_docs:
            plan.updates["evaluation.max_corpus"] = docs
        if free["evaluation.hard_distractors"] and (docs < n_docs or grid_docs):
            # nearest first: enough of each query's nearest documents, rank by rank, to fill the corpus sample (and
            # the grid's sub-sample of it)
            plan.updates["evaluation.hard_distractors"] = nearest_first(queries, docs if docs < n_docs else grid_docs)
    full_seconds = (min(queries, n_queries) + min(docs, n_docs)) / rate
    # an interim sub-sample for the grid: the user's, or the plan's (mined negatives, above)
    interim_q = _typical(space, "evaluation.interim_queries", ev.interim_queries)
    interim_c = plan.updates.get("evaluation.interim_corpus") or _typical(space, "evaluation.interim_corpus", ev.interim_corpus)
    if interim_q or interim_c:
        iq, ic = interim_q or queries, interim_c or docs
        # the grid measures the sub-sample; the end measures it and the whole sample
        eval_seconds, final_seconds = (min(iq, queries, n_queries) + min(ic, docs, n_docs)) / rate, full_seconds
    else:
        eval_seconds, final_seconds = full_seconds, 0.0
    spec = space.pruner
    prunes = spec.get("type") != "none"
    median = spec.get("type") in ("median", "percentile")  # the rules with a start-up the plan sets
    # trial length: about TARGET_TRIALS trials. A trial's average cost (cost_share) depends on how early the pruner
    # can stop one, which depends on the grid, which depends on the length: settle them together in a few rounds
    user_grid = ev.every_pairs or _typical(space, "evaluation.every_pairs", None)  # the base's or the space's
    step_grid = _typical(space, "evaluation.every_steps", ev.every_steps)
    typical_pairs, share = pairs, cost_share(prunes, MIN_EVALS, 1)  # a first guess: the fewest evaluations
    for _ in range(3):
        pairs = typical_pairs
        if free["training.epochs"] and free["training.max_steps"]:
            # TARGET_TRIALS trials, the start-up's run to the end: so many full trials' time
            startup = spec.get("n_startup_trials", startup_trials(TARGET_TRIALS) if median else 0) if prunes else 0
            fit_pairs = timeout / trials_cost(TARGET_TRIALS, share, startup) * (1 - EVAL_SHARE) * speed["train_pairs_per_s"]
            if fit_pairs < pairs:
                epochs = max(0.1, round(fit_pairs / n_train, 2))
                plan.updates["training.epochs"] = epochs
                pairs = epochs * n_train
        train_seconds = pairs / speed["train_pairs_per_s"]
        n_evals = evaluations(train_seconds, eval_seconds, final_seconds)
        grid = user_grid
        if grid_free:
            grid = _round_up(pairs / n_evals)
            plan.updates["evaluation.every_pairs"] = grid
        every = grid or (step_grid * batch if step_grid else None)  # a grid in steps, as pairs at the typical batch
        if every:
            n_evals = max(1, math.ceil(pairs / every))  # the grid points, and the end when it is not one
        warmup = spec.get("n_warmup_steps", warmup_pairs(pairs, grid) if grid else None)
        settled = cost_share(prunes, pairs, every, warmup) == share
        share = cost_share(prunes, pairs, every, warmup)
        if settled:
            break
    trial_seconds = train_seconds + n_evals * eval_seconds + final_seconds
    budget = timeout / trial_seconds  # full trials
    # the pruner's start-up follows the trials that fit, which follow the start-up: settle them in two rounds
    startup = spec.get("n_startup_trials", 0) if prunes else 0
    if median and "n_startup_trials" not in spec:
        startup = startup_trials(trials_fit(budget, share, 2))
        startup = startup_trials(trials_fit(budget, share, startup))
    fits = trials_fit(budget, share, startup)
    if median:
        if "n_startup_trials" not in spec:
            plan.pruner["n_startup_trials"] = startup
        if "n_warmup_steps" not in spec and grid:
            plan.pruner["n_warmup_steps"] = warmup  # the first grid point, or more: not judged (warmup_pairs)
    if space.sampler.type == "tpe" and space.sampler.n_startup_trials is None:
        # TPE's random start-up (Optuna's default: 10 trials) must end while there is budget left: the starting
        # points count toward it, then one random trial, then TPE, sampling near the best trials so far
        starting = len(space.starting_points)
        plan.sampler["n_startup_trials"] = max(starting + 1, min(10, round(fits / 3)))
    n = f"{fits:.0f}" if fits >= 2 else f"{fits:.1f}"
    plan.line = (
        f"{timeout / 60:.0f} min: ~{n} trials of ~{trial_seconds / 60:.1f} min, validation {min(queries, n_queries):,} "
        f"queries x {min(docs, n_docs):,} docs" + (f", evaluate every {int(grid):,} pairs" if grid else "")
        + (f" on {min(iq, queries, n_queries):,} x {min(ic, docs, n_docs):,}" if interim_q or interim_c else "")
    )  # fmt: skip
    if fits < WARN_TRIALS:
        plan.warnings.append(
            f"only ~{n} trials of ~{trial_seconds / 60:.1f} min fit in {timeout / 60:.0f} min "
            f"({speed['train_pairs_per_s']:.0f} training pairs/s here); a longer --timeout or shorter trials search better"
        )
    return plan


def predict_seconds(config: TrialConfig, measured: dict[str, float]) -> float | None:
    """How long a trial of ``config`` runs here by the plan's measurements (``Plan.measured``): its training pairs at
    the speed measured for its batch size, slowed by its mined negatives, and its evaluations on its grid. None
    without measurements (no ``--timeout``), or for a plan stored before session 13, which lacks the data's size.

    The search scales it by what its complete trials took against their predictions (``Coordinator.late``): model
    loading, Ray's scheduling, a weight merge and the user's own negatives are not in it.
    """
    rows, encode = measured.get("train_rows"), measured.get("encode_texts_per_s")
    rates = {int(k.partition("@")[2]): v for k, v in measured.items() if k.startswith("train_pairs_per_s@") and v}
    if not rows or not encode or not rates:
        return None
    t, ev, d = config.training, config.evaluation, config.data
    pairs = t.max_steps * t.batch_size if t.max_steps else t.epochs * rows * (1 + d.synonym_pairs)
    # the speed at its batch size: linear between the nearest two measured sizes, the nearest's beyond them
    sizes = sorted(rates)
    rate = float(np.interp(t.batch_size, sizes, [rates[b] for b in sizes])) / ((2 + d.hard_negatives) / 2)
    n_q, n_d = measured.get("val_queries", 0), measured.get("val_docs", 0)
    queries, docs = min(ev.max_queries or n_q, n_q), min(ev.max_corpus or n_d, n_d)
    each, final = (queries + docs) / encode, 0.0
    if ev.interim_queries or ev.interim_corpus:  # the grid measures the sub-sample; the end the whole sample too
        each, final = (min(ev.interim_queries or queries, queries) + min(ev.interim_corpus or docs, docs)) / encode, each
    every = ev.every_pairs or (ev.every_steps * t.batch_size if ev.every_steps else None)
    n_evals = max(1, math.ceil(pairs / every)) if every else 1
    return pairs / rate + n_evals * each + final


_KEYS = (
    "evaluation.every_pairs", "evaluation.every_steps", "evaluation.max_queries", "evaluation.max_corpus",
    "evaluation.hard_distractors", "evaluation.interim_queries", "evaluation.interim_corpus", "training.epochs",
    "training.max_steps",
)  # fmt: skip


def _typical(space: SearchSpace, key: str, default: Any) -> Any:
    """The median of the values the space may give ``key`` (its ranges' midpoints), else ``default``."""
    values = [v for v in space.possible(key) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for p in space.params.values():
        if p.target == key and p.type in ("float", "int"):
            values.append((p.low + p.high) / 2)
    return statistics.median(values) if values else default


def _round_up(pairs: float) -> int:
    return int(max(1, math.ceil(pairs / GRID_UNIT)) * GRID_UNIT)


def batch_choices(space: SearchSpace, default: int, most: int = 4) -> list[int]:
    """The batch sizes the space may sample (choices, a range's ends), at most ``most`` of them spread from the
    smallest to the largest; else ``default``."""
    values = {int(v) for v in space.possible("training.batch_size") if isinstance(v, int) and not isinstance(v, bool)}
    for p in space.params.values():
        if p.target == "training.batch_size" and p.type == "int":
            values |= {int(p.low), int(p.high)}
    ordered = sorted(values) or [int(default)]
    if len(ordered) > most:
        ordered = sorted({ordered[round(i * (len(ordered) - 1) / (most - 1))] for i in range(most)})
    return ordered


def measure(base: TrialConfig, info: BackboneInfo, dataset, *, batches: list[int], steps: int = 2) -> dict[str, float]:
    """Time ``steps`` training steps at each of ``batches`` (after one untimed) on a seeded sample of the training
    rows, and the encoding of a few hundred texts.

    ``train_pairs_per_s`` is the rate a trial of a random one of ``batches`` trains at on average (the harmonic
    mean: time per pair averaged). Until session 8 the plan timed the typical batch alone, on the file's first rows:
    on ICD-10 it planned 56 pairs/s where batch-16 and batch-32 trials trained at 29 and 40, so fewer trials ran
    than it promised.
    """
    from transformers import AutoTokenizer

    device = resolve_device(base.training.device)
    torch.manual_seed(base.training.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(info.transformer_path), local_files_only=True)
    need = max(batches) * (steps + 1)
    rows = random.Random(base.training.seed).sample(dataset.train, min(need, len(dataset.train)))
    texts = [t for ex in rows for t in (ex.anchor, ex.positive)]
    sample = [ex.anchor for ex in dataset.val[:128]] + list((dataset.corpus or {}).values())[:256]
    cache = TokenCache.build(tokenizer, [*texts, *sample], base.data.max_seq_length)
    model = build_model(base, device=device, info=info)
    optimizer = _optimizer(model, base)
    model.train()
    rates = {}
    for batch in batches:
        times = []
        for i in range(steps + 1):
            chunk = rows[i * batch : (i + 1) * batch] or rows[:batch]
            t0 = time.perf_counter()
            anchors = _embed(model, cache, [cache.index[ex.anchor] for ex in chunk], device)
            positives = _embed(model, cache, [cache.index[ex.positive] for ex in chunk], device)
            ids = torch.arange(len(chunk), device=device)
            # the timing is the encoder's; InfoNCE stands for every loss (labeled pairs have no labels here)
            loss = compute_loss(LossConfig(), Batch(anchors=anchors, positives=positives, anchor_ids=ids, positive_ids=ids))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i:  # the first step pays one-time costs
                times.append((time.perf_counter() - t0, len(chunk)))
        rates[batch] = sum(n for _, n in times) / sum(s for s, _ in times)
    model.eval()
    idx = [cache.index[t] for t in dict.fromkeys(sample or texts)]
    t0 = time.perf_counter()
    encode(model, cache, idx, batch_size=base.evaluation.batch_size)
    encode_seconds = time.perf_counter() - t0
    return {
        "train_pairs_per_s": round(len(rates) / sum(1 / r for r in rates.values()), 2),
        **{f"train_pairs_per_s@{b}": round(r, 2) for b, r in rates.items()},
        "encode_texts_per_s": round(len(idx) / encode_seconds, 2),
    }

"""The base model as a search axis: an untrained screening pass drops the weak candidates before any training.

A space may search the base model (``model: {type: categorical, choices: [folder, package:name, ...]}``). Fine-tuning
rarely turns a clearly weaker starting point into the better model, and every trial spent on one is lost to the
others, so before the study exists each candidate is evaluated as it is, untrained, on one validation sample: the
same queries and documents for every candidate (a random corpus sample, no model's own nearest distractors, which
would make each model's task its own). Candidates more than ``screen.margin`` below the best are dropped, and of the
rest the best ``screen.keep`` stay, best first; the search then samples among them, and starting points that name no
model take the best. The result is stored with the study's plan, so a resumed or second driver searches the same
models (and Optuna's distribution of the param never changes within a study).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from autoembed.config import TrialConfig
from autoembed.evaluation import RetrievalEvaluator
from autoembed.model import backbone_info, build_model
from autoembed.space import SearchSpace
from autoembed.training import prepare, resolve_device

# the validation sample a screen evaluates on when the study's base config sets none (as the budget plan's)
SCREEN_QUERIES, SCREEN_CORPUS = 600, 5000


@dataclass
class Screening:
    """Each candidate's untrained value, and the ones kept, best first."""

    metric: str
    scores: dict[str, float]
    kept: list[str]
    seconds: float = 0.0
    sample: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "scores": self.scores, "kept": self.kept, "seconds": round(self.seconds, 1), "sample": self.sample}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Screening:
        return cls(str(data["metric"]), dict(data["scores"]), list(data["kept"]), float(data.get("seconds") or 0.0), dict(data.get("sample") or {}))

    def line(self) -> str:
        dropped = [m for m in self.scores if m not in self.kept]
        ranked = sorted(self.scores, key=lambda m: -self.scores[m])
        scores = ", ".join(f"{m} {self.scores[m]:.3f}" + ("" if m in self.kept else " (dropped)") for m in ranked)
        head = f"screened {len(self.scores)} base models untrained ({self.metric}"
        if self.sample:
            head += f" on {self.sample['queries']:,} validation queries x {self.sample['docs']:,} docs"
        return f"{head}, {self.seconds:.0f} s): {scores}; searching {len(self.kept)}" + (f", dropped {len(dropped)}" if dropped else "")


def screen_models(space: SearchSpace, base: TrialConfig) -> Screening:
    """Evaluate each of the model param's choices untrained on one validation sample; keep the best (see module)."""
    param = space.model_param
    assert param is not None
    ev = base.evaluation
    updates: dict[str, Any] = {"evaluation.hard_distractors": 0, "data.hard_negatives": 0}
    if ev.max_queries is None:
        updates["evaluation.max_queries"] = SCREEN_QUERIES
    if ev.max_corpus is None:
        updates["evaluation.max_corpus"] = SCREEN_CORPUS
    t0 = time.perf_counter()
    scores: dict[str, float] = {}
    sample: dict[str, int] = {}
    for model in param.choices:
        backbone_info(model)  # a missing or broken model: one line naming it, before anything is read
        config = base.replace(model=model, **updates)
        prepared = prepare(config)
        net = build_model(config, device=resolve_device(config.training.device), info=prepared.info)
        net.eval()
        evaluator = RetrievalEvaluator(prepared.val_task, prepared.cache, config.evaluation.k, primary_metric=space.metric, batch_size=config.evaluation.batch_size)
        with torch.no_grad():
            scores[model] = float(evaluator(net)[space.metric])
        sample = {"queries": len(prepared.val_task.queries), "docs": len(prepared.val_task.corpus)}
        del net, prepared
    best = max(scores.values())
    close = sorted((m for m in scores if scores[m] >= best - space.screen.margin), key=lambda m: -scores[m])
    return Screening(space.metric, scores, close[: space.screen.keep], time.perf_counter() - t0, sample)

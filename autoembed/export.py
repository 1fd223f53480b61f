"""Smaller, faster embeddings after training: a PCA projection and half-precision weights (``export``).

PCA is fitted on the trained model's embeddings of the training texts and saved as a stock
sentence-transformers ``Dense`` module (identity activation; weight = the components, bias = -components @
mean), followed by ``Normalize`` when the model normalizes, so the folder still loads anywhere. fp16 halves
every weight. Each step's validation metrics before and after go into metrics.json under ``export``.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import Tensor

from autoembed.config import TrialConfig
from autoembed.evaluation import RetrievalEvaluator, encode


def fit_pca(embeddings: Tensor, variance: float) -> tuple[Tensor, Tensor, float]:
    """The fewest principal components that explain at least ``variance`` of the rows' variance.

    Returns ``(components (k, d), mean (d,), explained share)``; computed in float64.
    """
    x = embeddings.double()
    mean = x.mean(dim=0)
    centered = x - mean
    values, vectors = torch.linalg.eigh(centered.T @ centered / max(1, len(x) - 1))
    values, vectors = values.flip(0).clamp_min(0.0), vectors.flip(1)
    ratio = values.cumsum(0) / values.sum()
    k = min(int((ratio < variance).sum()) + 1, len(values))
    return vectors[:, :k].T.float(), mean.float(), float(ratio[k - 1])


def pca_modules(components: Tensor, mean: Tensor, *, normalize: bool) -> list[torch.nn.Module]:
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    dense = Dense(
        components.shape[1], components.shape[0], activation_function=None, init_weight=components, init_bias=-(components @ mean)
    )
    return [dense, Normalize()] if normalize else [dense]


def _training_texts(prepared) -> list[str]:
    return list(dict.fromkeys(t for ex in prepared.dataset.train for t in (ex.anchor, ex.positive, *ex.negatives)))


def _with_suffix(metrics: dict[str, float], suffix: str) -> dict[str, float]:
    return {f"{name}{suffix}": value for name, value in metrics.items()}


def export_model(model, config: TrialConfig, prepared, before: dict[str, float]) -> dict[str, Any]:
    """Apply ``config.export`` to the trained ``model`` in place; return what each step did to the metrics.

    ``before`` is the trained model's validation metrics; each step is measured on the same validation task.
    """
    e = config.export
    if e.pca_variance is None and e.dtype == "fp32":
        return {}
    ev = config.evaluation
    evaluator = RetrievalEvaluator(prepared.val_task, prepared.cache, ev.k, primary_metric=ev.metric, batch_size=ev.batch_size)
    out: dict[str, Any] = {}
    if e.pca_variance is not None:
        texts = _training_texts(prepared)
        if len(texts) > e.pca_max_texts:
            texts = random.Random(config.training.seed).sample(texts, e.pca_max_texts)
        embeddings = encode(model, prepared.cache, [prepared.cache.index[t] for t in texts], batch_size=ev.batch_size)
        components, mean, kept = fit_pca(embeddings, e.pca_variance)
        device = next(model.parameters()).device
        for module in pca_modules(components, mean, normalize=config.architecture.normalize):
            model.append(module.to(device))
        after = evaluator(model)
        out["pca"] = {"dim": components.shape[0], "input_dim": components.shape[1], "variance": kept, "texts": len(texts)}
        out["pca"] |= _with_suffix(before, "_before") | _with_suffix(after, "_after")
        before = after
    if e.dtype == "fp16":
        model.half()
        after = evaluator(model)
        out["fp16"] = _with_suffix(before, "_before") | _with_suffix(after, "_after")
    return out

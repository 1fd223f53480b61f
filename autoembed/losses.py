"""Training objectives on a batch of embeddings.

Every loss takes the anchors' and positives' embeddings, optional hard negatives (each owned by one row),
and the text ids of everything in the batch: two candidates with the same text id are the same text, so a
duplicate of a row's positive is never used as that row's negative, nor is the positive of another row with the
same anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from autoembed.config import LossConfig


@dataclass
class Batch:
    """Embeddings and text ids of one batch; ``neg_owner[k]`` is the row that negative ``k`` belongs to."""

    anchors: Tensor
    positives: Tensor
    anchor_ids: Tensor
    positive_ids: Tensor
    negatives: Tensor | None = None
    negative_ids: Tensor | None = None
    neg_owner: Tensor | None = None
    labels: Tensor | None = None  # labeled pairs: 1 similar, 0 dissimilar


def distance(x: Tensor, y: Tensor, kind: str) -> Tensor:
    """Pairwise distances between the rows of x (n, d) and y (m, d)."""
    if kind == "cosine":
        return 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T
    return torch.cdist(x, y)


def paired_distance(x: Tensor, y: Tensor, kind: str) -> Tensor:
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(x, y, dim=-1)
    return (x - y).norm(dim=-1)


def _candidates(batch: Batch) -> tuple[Tensor, Tensor]:
    if batch.negatives is None or batch.negatives.shape[0] == 0:
        return batch.positives, batch.positive_ids
    return torch.cat([batch.positives, batch.negatives]), torch.cat([batch.positive_ids, batch.negative_ids])


def _false_negatives(row_ids: Tensor, cand_ids: Tensor, n_rows: int, also: Tensor | None = None) -> Tensor:
    """(rows, candidates) mask of candidates that repeat a row's own positive (or anchor) text.

    With ``also``, rows that share that text are one query with several answers: each one's own candidate is a
    right answer for the other (validation counts both as relevant), so it is masked too.
    """
    mask = row_ids[:, None] == cand_ids[None, :]
    if also is not None:
        mask |= also[:, None] == cand_ids[None, :]
        mask[:, :n_rows] |= also[:, None] == also[None, :]
    eye = torch.zeros_like(mask)
    eye[:, :n_rows] = torch.eye(n_rows, dtype=torch.bool, device=mask.device)
    return mask & ~eye


def _smoothed_ce(logits: Tensor, valid: Tensor, smoothing: float) -> Tensor:
    """Cross-entropy with target i for row i, label smoothing spread over the valid candidates only."""
    logits = logits.masked_fill(~valid, float("-inf"))
    logp = logits.log_softmax(dim=-1)
    target = torch.arange(logits.shape[0], device=logits.device)
    nll = -logp[target, target]
    if smoothing <= 0:
        return nll.mean()
    uniform = -(logp.masked_fill(~valid, 0.0).sum(dim=-1) / valid.sum(dim=-1))
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def infonce(batch: Batch, temperature: float, smoothing: float = 0.0, symmetric: bool = False) -> Tensor:
    """Multiple-negatives ranking: each anchor against all positives and negatives in the batch."""
    n = batch.anchors.shape[0]
    cands, cand_ids = _candidates(batch)
    logits = F.normalize(batch.anchors, dim=-1) @ F.normalize(cands, dim=-1).T / temperature
    valid = ~_false_negatives(batch.positive_ids, cand_ids, n, also=batch.anchor_ids)
    loss = _smoothed_ce(logits, valid, smoothing)
    if symmetric:
        back = F.normalize(batch.positives, dim=-1) @ F.normalize(batch.anchors, dim=-1).T / temperature
        valid_back = ~_false_negatives(batch.anchor_ids, batch.anchor_ids, n, also=batch.positive_ids)
        loss = (loss + _smoothed_ce(back, valid_back, smoothing)) / 2
    return loss


def triplet(batch: Batch, margin: float, kind: str) -> Tensor:
    """``relu(d(a, p) - d(a, n) + margin)``; rows without negatives use the batch's other positives."""
    d_pos = paired_distance(batch.anchors, batch.positives, kind)
    if batch.negatives is not None and batch.negatives.shape[0] > 0:
        d_neg = paired_distance(batch.anchors[batch.neg_owner], batch.negatives, kind)
        return F.relu(d_pos[batch.neg_owner] - d_neg + margin).mean()
    n = batch.anchors.shape[0]
    d_all = distance(batch.anchors, batch.positives, kind)
    valid = ~_false_negatives(batch.positive_ids, batch.positive_ids, n, also=batch.anchor_ids)
    valid &= ~torch.eye(n, dtype=torch.bool, device=valid.device)
    losses = F.relu(d_pos[:, None] - d_all + margin)
    return losses[valid].mean() if valid.any() else d_pos.sum() * 0.0


def contrastive(batch: Batch, margin: float, kind: str) -> Tensor:
    """``0.5 * (y * d^2 + (1 - y) * relu(margin - d)^2)``.

    Labeled pairs use their labels. Unlabeled pairs use (anchor, own positive) as y=1 and (anchor, other
    positives and negatives in the batch) as y=0; the two sides are averaged separately so the B^2
    dissimilar pairs do not drown the B similar ones.
    """
    if batch.labels is not None:
        d = paired_distance(batch.anchors, batch.positives, kind)
        y = batch.labels
        return (0.5 * (y * d.pow(2) + (1 - y) * F.relu(margin - d).pow(2))).mean()
    n = batch.anchors.shape[0]
    cands, cand_ids = _candidates(batch)
    d = distance(batch.anchors, cands, kind)
    positive = torch.zeros_like(d, dtype=torch.bool)
    positive[:, :n] = torch.eye(n, dtype=torch.bool, device=d.device)
    negative = ~positive & ~_false_negatives(batch.positive_ids, cand_ids, n, also=batch.anchor_ids)
    pos_term = d[positive].pow(2).mean()
    neg_term = F.relu(margin - d[negative]).pow(2).mean() if negative.any() else d.sum() * 0.0
    return 0.5 * (pos_term + neg_term)


def compute_loss(config: LossConfig, batch: Batch) -> Tensor:
    if config.type == "infonce":
        return infonce(batch, config.temperature, config.label_smoothing, config.symmetric)
    if config.type == "triplet":
        return triplet(batch, config.margin, config.distance)
    if config.type == "contrastive":
        return contrastive(batch, config.margin, config.distance)
    raise ValueError(f"unknown loss type {config.type!r}")

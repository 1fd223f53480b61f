"""The losses against their formulas, with duplicate texts in the batch never used as negatives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autoembed.config import LossConfig
from autoembed.losses import Batch, compute_loss, contrastive, infonce, triplet


def random_batch(
    n: int = 5, d: int = 8, *, seed: int = 0, negatives: int = 0, positive_ids=None, anchor_ids=None, labels=None
) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    a_ids = torch.tensor(anchor_ids if anchor_ids is not None else range(100, 100 + n))
    p_ids = torch.tensor(positive_ids if positive_ids is not None else range(200, 200 + n))
    batch = Batch(torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen), a_ids, p_ids)
    if negatives:
        batch.negatives = torch.randn(negatives, d, generator=gen)
        batch.negative_ids = torch.arange(300, 300 + negatives)
        batch.neg_owner = torch.arange(negatives) % n
    if labels is not None:
        batch.labels = torch.tensor(labels, dtype=torch.float32)
    return batch


def cos(x, y):
    return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T


def masked_ce(logits: torch.Tensor, masked: list[tuple[int, int]]) -> torch.Tensor:
    """Cross-entropy with target i for row i after setting the listed (row, column) logits to -inf by hand."""
    logits = logits.clone()
    for row, col in masked:
        logits[row, col] = float("-inf")
    return F.cross_entropy(logits, torch.arange(logits.shape[0]))


def test_infonce_without_duplicates_is_cross_entropy_over_the_batch():
    batch = random_batch(6, negatives=4)
    logits = cos(batch.anchors, torch.cat([batch.positives, batch.negatives])) / 0.05
    expected = F.cross_entropy(logits, torch.arange(6))
    torch.testing.assert_close(infonce(batch, 0.05), expected)


def test_a_shared_positive_is_not_a_false_negative():
    # rows 0 and 2 share the same positive text: each must not count the other's column as a negative
    batch = random_batch(4, positive_ids=[7, 8, 7, 9])
    logits = cos(batch.anchors, batch.positives) / 0.1
    expected = masked_ce(logits, [(0, 2), (2, 0)])
    torch.testing.assert_close(infonce(batch, 0.1), expected)
    assert not torch.isclose(infonce(batch, 0.1), F.cross_entropy(logits, torch.arange(4)))


def test_a_candidate_equal_to_the_anchor_or_the_positive_is_masked():
    # row 1's anchor text is row 3's positive; row 0's own positive text is also hard negative 1
    batch = random_batch(4, negatives=2, anchor_ids=[10, 11, 12, 13], positive_ids=[20, 21, 22, 11])
    batch.negative_ids = torch.tensor([30, 20])
    logits = cos(batch.anchors, torch.cat([batch.positives, batch.negatives])) / 0.05
    expected = masked_ce(logits, [(1, 3), (0, 5)])
    torch.testing.assert_close(infonce(batch, 0.05), expected)


def test_a_repeated_anchor_does_not_use_the_other_rows_positive_as_a_negative():
    # rows 1 and 3 are one query with two answers; hard negatives of either stay negatives
    batch = random_batch(4, negatives=2, anchor_ids=[10, 11, 12, 11])
    logits = cos(batch.anchors, torch.cat([batch.positives, batch.negatives])) / 0.05
    torch.testing.assert_close(infonce(batch, 0.05), masked_ce(logits, [(1, 3), (3, 1)]))
    d = 1 - cos(batch.anchors, batch.positives)
    terms = [F.relu(d[i, i] - d[i, j] + 0.5) for i in range(4) for j in range(4) if i != j and {i, j} != {1, 3}]
    batch.negatives = None
    torch.testing.assert_close(triplet(batch, 0.5, "cosine"), torch.stack(terms).mean())


def test_symmetric_infonce_averages_both_directions():
    # rows 0 and 2 share a positive, rows 1 and 4 an anchor: masked in both directions
    batch = random_batch(5, positive_ids=[1, 2, 1, 3, 4], anchor_ids=[5, 6, 7, 8, 6])
    pairs = [(0, 2), (2, 0), (1, 4), (4, 1)]
    forward = masked_ce(cos(batch.anchors, batch.positives) / 0.05, pairs)
    backward = masked_ce(cos(batch.positives, batch.anchors) / 0.05, pairs)
    torch.testing.assert_close(infonce(batch, 0.05, symmetric=True), (forward + backward) / 2)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch_without_duplicates(smoothing):
    batch = random_batch(6, negatives=3)
    logits = cos(batch.anchors, torch.cat([batch.positives, batch.negatives])) / 0.07
    # torch spreads the smoothing over every class, the target included, as infonce does over the valid candidates
    expected = F.cross_entropy(logits, torch.arange(6), label_smoothing=smoothing)
    torch.testing.assert_close(infonce(batch, 0.07, smoothing), expected)


def test_label_smoothing_ignores_masked_candidates():
    batch = random_batch(4, positive_ids=[7, 8, 7, 9])
    logits = cos(batch.anchors, batch.positives) / 0.1
    logp = logits.clone()
    logp[0, 2] = logp[2, 0] = float("-inf")
    logp = logp.log_softmax(-1)
    valid = torch.isfinite(logp)
    nll = -logp.diagonal()
    uniform = -logp.where(valid, 0.0).sum(-1) / valid.sum(-1)
    torch.testing.assert_close(infonce(batch, 0.1, 0.2), (0.8 * nll + 0.2 * uniform).mean())


@pytest.mark.parametrize("kind", ["cosine", "euclidean"])
def test_triplet_with_hard_negatives(kind):
    batch = random_batch(3, negatives=5)
    dist = (
        (lambda x, y: 1 - F.cosine_similarity(x, y, dim=-1))
        if kind == "cosine"
        else (lambda x, y: (x - y).norm(dim=-1))
    )
    owner = batch.neg_owner
    expected = F.relu(
        dist(batch.anchors[owner], batch.positives[owner]) - dist(batch.anchors[owner], batch.negatives) + 0.3
    ).mean()
    torch.testing.assert_close(triplet(batch, 0.3, kind), expected)


def test_triplet_in_batch_skips_the_own_and_duplicate_positives():
    batch = random_batch(4, positive_ids=[7, 8, 7, 9])
    d = 1 - cos(batch.anchors, batch.positives)
    terms = [F.relu(d[i, i] - d[i, j] + 0.5) for i in range(4) for j in range(4) if i != j and {i, j} != {0, 2}]
    torch.testing.assert_close(triplet(batch, 0.5, "cosine"), torch.stack(terms).mean())


def test_contrastive_labeled_pairs():
    batch = random_batch(4, labels=[1, 0, 1, 0])
    d = 1 - F.cosine_similarity(batch.anchors, batch.positives, dim=-1)
    y = batch.labels
    expected = (0.5 * (y * d**2 + (1 - y) * F.relu(0.8 - d) ** 2)).mean()
    torch.testing.assert_close(contrastive(batch, 0.8, "cosine"), expected)


def test_contrastive_unlabeled_averages_similar_and_dissimilar_separately():
    batch = random_batch(4, positive_ids=[7, 8, 7, 9], negatives=2)
    d = torch.cdist(batch.anchors, torch.cat([batch.positives, batch.negatives]))
    pos = d.diagonal().pow(2).mean()
    neg = [
        F.relu(1.5 - d[i, j]) ** 2 for i in range(4) for j in range(6) if j != i and not (j < 4 and {i, j} == {0, 2})
    ]
    torch.testing.assert_close(contrastive(batch, 1.5, "euclidean"), 0.5 * (pos + torch.stack(neg).mean()))


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (LossConfig(type="infonce", temperature=0.5), lambda b: infonce(b, 0.5)),
        (
            LossConfig(type="infonce", temperature=0.5, symmetric=True, label_smoothing=0.1),
            lambda b: infonce(b, 0.5, 0.1, True),
        ),
        (LossConfig(type="triplet", margin=0.2, distance="euclidean"), lambda b: triplet(b, 0.2, "euclidean")),
        (LossConfig(type="contrastive", margin=0.7), lambda b: contrastive(b, 0.7, "cosine")),
    ],
    ids=["infonce", "infonce-symmetric", "triplet", "contrastive"],
)
def test_compute_loss_dispatches_on_the_config(loss, expected):
    batch = random_batch(5)
    torch.testing.assert_close(compute_loss(loss, batch), expected(batch))


@pytest.mark.parametrize(
    "loss",
    [
        LossConfig(type="infonce", temperature=0.05),
        LossConfig(type="infonce", temperature=0.05, symmetric=True),
        LossConfig(type="triplet", margin=0.5),
        LossConfig(type="contrastive", margin=0.5),
        LossConfig(type="contrastive", margin=1.0, distance="euclidean"),
    ],
    ids=["infonce", "symmetric", "triplet", "contrastive", "contrastive-euclidean"],
)
def test_every_loss_falls_when_its_inputs_are_optimized(loss):
    batch = random_batch(8, d=16, seed=3, positive_ids=[1, 2, 3, 4, 1, 5, 6, 7])
    anchors = batch.anchors.clone().requires_grad_(True)
    positives = batch.positives.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([anchors, positives], lr=0.05)
    losses = []
    for _ in range(30):
        step = Batch(anchors, positives, batch.anchor_ids, batch.positive_ids)
        value = compute_loss(loss, step)
        losses.append(value.item())
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]

"""What the base model knows before training: hard negatives for training, hard distractors for validation.

Mining: for each training query the base model ranks a pool of texts (the corpus when there is one, else the
training positives); the highest-ranked texts that are not one of that query's positives become its negatives,
hardest first. Training takes the first ``data.hard_negatives`` of them for every row of that query.

Validation sampling: when validation ranks against a sample of the corpus (``evaluation.max_corpus``), a random
sample holds few of the documents a query can be confused with, so it ranks trials by how well they tell apart
unrelated texts. ``evaluation.hard_distractors`` puts each validation query's top-ranked documents (by the base
model) into the sample first, so that validation, like the test against the whole corpus, measures the hard part.

Both depend only on the base model, the data and ``data.max_seq_length``: the search computes them once for
every trial, and ``autoembed train`` computes the same again from the recipe. Every text is encoded once.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from autoembed.data import Example
from autoembed.evaluation import TokenCache, encode, top_k

log = logging.getLogger(__name__)


class BaseEmbeddings:
    """The base model's embeddings, each text encoded once however often it is asked for."""

    def __init__(self, encoder, tokenizer, max_length: int, *, device=None, batch_size: int = 256):
        self.encoder, self.tokenizer, self.max_length = encoder, tokenizer, max_length
        self.device, self.batch_size = device, batch_size
        self.rows: dict[str, int] = {}
        self.vectors: Tensor | None = None
        self.seconds = 0.0

    def __call__(self, texts: Sequence[str]) -> Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if missing:
            started = time.perf_counter()
            cache = TokenCache.build(self.tokenizer, missing, self.max_length)
            block = encode(self.encoder, cache, [cache.index[t] for t in missing], batch_size=self.batch_size, device=self.device)
            start = len(self.rows)
            self.rows.update((t, start + i) for i, t in enumerate(missing))
            self.vectors = block if self.vectors is None else torch.cat([self.vectors, block])
            self.seconds += time.perf_counter() - started
        return self.vectors[torch.tensor([self.rows[t] for t in texts], dtype=torch.long)]

    def nearest(self, queries: Sequence[str], documents: Sequence[str], n: int) -> list[list[int]]:
        """For each query, the indices of the ``n`` documents the base model ranks highest, best first."""
        if not queries or not documents or n <= 0:
            return [[] for _ in queries]
        return top_k(self(queries), self(documents), min(n, len(documents))).tolist()


# PCA texts: enough for a stable hidden x hidden second moment (384 dims), few enough to encode in seconds
PCA_TEXTS = 4096


def pca_texts(examples: Sequence[Example]) -> list[str]:
    """The training texts whose base embeddings the projection's PCA is computed from: a fixed seeded sample."""
    texts = list(dict.fromkeys(t for ex in examples for t in (ex.anchor, ex.positive)))
    if len(texts) > PCA_TEXTS:
        texts = random.Random(0).sample(texts, PCA_TEXTS)
    return texts


def pca_basis(vectors: Tensor) -> Tensor:
    """Principal directions (columns, best first) of L2-normalised embeddings, uncentered.

    Uncentered because centering would change cosine scores: with it a full-width projection would not rank as
    the base model does; without it the projection is a rotation, and a narrower one keeps the directions that
    carry most of what cosine sees. Each column's sign is fixed (largest entry positive), so the basis is a
    function of the embeddings alone.
    """
    x = F.normalize(vectors.double(), dim=-1)
    values, vecs = torch.linalg.eigh(x.T @ x / x.shape[0])
    vecs = vecs[:, torch.argsort(values, descending=True, stable=True)]
    signs = torch.sign(vecs.gather(0, vecs.abs().argmax(dim=0, keepdim=True)))
    return (vecs * signs).float()


def mining_pool(examples: Sequence[Example], corpus: dict[str, str] | None) -> list[str]:
    """The texts negatives are drawn from, each once, in a fixed order."""
    texts = corpus.values() if corpus else (ex.positive for ex in examples)
    return list(dict.fromkeys(texts))


def candidate_depth(n: int) -> int:
    """How many ranked candidates a query keeps for ``n`` negatives: room for the positive-aware filter to drop some.

    A function of ``n`` alone, so training from a recipe sees the same candidates the search's trial saw, whatever
    the largest ``data.hard_negatives`` of the search was.
    """
    return 4 * n + 8 if n > 0 else 0


@dataclass
class Mined:
    """What mining found: per query, candidate negatives hardest first with their base scores, and its positive's score.

    Scores are the base model's cosine similarities; ``positive`` is the best score among a query's own positives.
    """

    negatives: dict[str, tuple[str, ...]] = field(default_factory=dict)
    scores: dict[str, tuple[float, ...]] = field(default_factory=dict)
    positive: dict[str, float] = field(default_factory=dict)

    def select(self, n: int, *, max_score_ratio: float | None = None, margin: float | None = None) -> dict[str, tuple[str, ...]]:
        """Query -> its ``n`` hardest candidates that pass the positive-aware filter (NV-Retriever's TopK-PercPos).

        A candidate is dropped when it scores above ``max_score_ratio`` x the positive's score, or within
        ``margin`` of it: such a "negative" is most often an unlabeled answer, and training to push it away
        teaches the model the wrong thing. Both off: the ``n`` hardest, as before.
        """
        if n <= 0:
            return {}
        out: dict[str, tuple[str, ...]] = {}
        depth = candidate_depth(n)
        for query, texts in self.negatives.items():
            if max_score_ratio is None and margin is None:
                out[query] = texts[:n]
                continue
            pos = self.positive[query]
            ceiling = min(pos * max_score_ratio if max_score_ratio is not None else math.inf, pos - margin if margin is not None else math.inf)
            out[query] = tuple(t for t, s in zip(texts[:depth], self.scores[query][:depth], strict=True) if s <= ceiling)[:n]
        return out


def mine_scored(base: BaseEmbeddings, examples: Sequence[Example], pool: Sequence[str], n: int) -> Mined:
    """For each training query, :func:`candidate_depth` (``n``) pool texts the base model ranks highest that are none
    of its positives, hardest first, with their scores and the score of its best positive.

    Deterministic for a given model, data and thread count.
    """
    depth = candidate_depth(n)
    if depth <= 0 or not examples:
        return Mined()
    started = time.perf_counter()
    answers: dict[str, set[str]] = {}
    positives: dict[str, set[str]] = {}
    for ex in examples:
        answers.setdefault(ex.anchor, set()).update((ex.positive, ex.anchor, *ex.negatives))
        positives.setdefault(ex.anchor, set()).add(ex.positive)
    queries = list(answers)
    widest = max(len(a) for a in answers.values())
    ranked = base.nearest(queries, pool, depth + widest)
    q_emb = F.normalize(base(queries), dim=-1)
    pool_emb = F.normalize(base(pool), dim=-1)
    mined = Mined()
    for qi, (query, row) in enumerate(zip(queries, ranked, strict=True)):
        own = answers[query]
        keep = [j for j in row if pool[j] not in own][:depth]
        mined.negatives[query] = tuple(pool[j] for j in keep)
        mined.scores[query] = tuple((pool_emb[keep] @ q_emb[qi]).tolist()) if keep else ()
        pos = sorted(positives[query])
        mined.positive[query] = float((F.normalize(base(pos), dim=-1) @ q_emb[qi]).max())
    log.info("mined %d candidates for each of %d queries from %d texts in %.1f s", depth, len(queries), len(pool), time.perf_counter() - started)
    return mined


def mine_hard_negatives(base: BaseEmbeddings, examples: Sequence[Example], pool: Sequence[str], depth: int) -> dict[str, tuple[str, ...]]:
    """Query text -> up to ``depth`` pool texts the base model ranks highest that are none of the query's positives.

    Deterministic for a given model, data and thread count.
    """
    return mine_scored(base, examples, pool, depth).select(depth)

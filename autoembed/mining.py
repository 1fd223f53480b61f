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
import time
from collections.abc import Sequence

import torch
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


def mining_pool(examples: Sequence[Example], corpus: dict[str, str] | None) -> list[str]:
    """The texts negatives are drawn from, each once, in a fixed order."""
    texts = corpus.values() if corpus else (ex.positive for ex in examples)
    return list(dict.fromkeys(texts))


def mine_hard_negatives(base: BaseEmbeddings, examples: Sequence[Example], pool: Sequence[str], depth: int) -> dict[str, tuple[str, ...]]:
    """Query text -> up to ``depth`` pool texts the base model ranks highest that are none of the query's positives.

    Deterministic for a given model, data and thread count.
    """
    if depth <= 0 or not examples:
        return {}
    started = time.perf_counter()
    answers: dict[str, set[str]] = {}
    for ex in examples:
        answers.setdefault(ex.anchor, set()).update((ex.positive, ex.anchor, *ex.negatives))
    queries = list(answers)
    widest = max(len(a) for a in answers.values())
    ranked = base.nearest(queries, pool, depth + widest)
    mined: dict[str, tuple[str, ...]] = {}
    for query, row in zip(queries, ranked, strict=True):
        own = answers[query]
        mined[query] = tuple([pool[j] for j in row if pool[j] not in own][:depth])
    log.info("mined %d negatives for each of %d queries from %d texts in %.1f s", depth, len(queries), len(pool), time.perf_counter() - started)
    return mined

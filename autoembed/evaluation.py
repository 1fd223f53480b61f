"""Encoding and retrieval metrics: recall@k, MRR@10 and nDCG@10 of queries against a corpus.

Texts are tokenized once into a :class:`TokenCache`; encoding pads each batch to its own longest text after
sorting by length, and top-k search walks the corpus in chunks so a large corpus never needs a full
query x corpus similarity matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from autoembed.data import RetrievalTask

MRR_K = 10
NDCG_K = 10
# On CPU a big batch only costs: its activations outgrow the caches. all-MiniLM-L6-v2 encodes ICD-10 texts about
# 25% faster in batches of 32 than of 256 (the evaluation default, which suits GPUs), on 1 thread and on 2.
CPU_BATCH_SIZE = 32


@dataclass
class TokenCache:
    """Every text of a run, tokenized once: flat token ids with offsets, and a text -> index map."""

    texts: list[str]
    ids: np.ndarray  # int32, all texts' token ids concatenated
    offsets: np.ndarray  # int64, len(texts) + 1
    pad_id: int
    with_token_types: bool

    @classmethod
    def build(cls, tokenizer, texts: Sequence[str], max_length: int, chunk: int = 4096) -> TokenCache:
        texts = list(dict.fromkeys(texts))
        pieces: list[list[int]] = []
        for start in range(0, len(texts), chunk):
            enc = tokenizer(list(texts[start : start + chunk]), truncation=True, max_length=max_length, padding=False)
            pieces.extend(enc["input_ids"])
        lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter((t for p in pieces for t in p), dtype=np.int32, count=int(offsets[-1]))
        with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(texts, ids, offsets, int(pad), with_types)

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.texts)}

    def lengths(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        return self.offsets[indices + 1] - self.offsets[indices]

    def features(self, indices: Sequence[int], device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """A padded batch for the texts at ``indices``."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths(indices)
        width = int(lengths.max())
        input_ids = np.full((len(indices), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(indices), width), dtype=np.int64)
        for row, (i, n) in enumerate(zip(indices, lengths, strict=True)):
            start = self.offsets[i]
            input_ids[row, :n] = self.ids[start : start + n]
            mask[row, :n] = 1
        out = {"input_ids": torch.from_numpy(input_ids).to(device), "attention_mask": torch.from_numpy(mask).to(device)}
        if self.with_token_types:
            out["token_type_ids"] = torch.zeros_like(out["input_ids"])
        return out


def encode(model, cache: TokenCache, indices: Sequence[int], *, batch_size: int = 256, device=None) -> Tensor:
    """Embeddings (float32, on CPU) of the cached texts at ``indices``, in that order."""
    device = device or next(model.parameters()).device
    if torch.device(device).type == "cpu":
        batch_size = min(batch_size, CPU_BATCH_SIZE)
    indices = np.asarray(indices, dtype=np.int64)
    order = np.argsort(-cache.lengths(indices), kind="stable")
    out: Tensor | None = None
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            emb = model(cache.features(indices[rows], device))["sentence_embedding"].float().cpu()
            if out is None:
                out = torch.empty((len(indices), emb.shape[1]), dtype=torch.float32)
            out[torch.from_numpy(rows)] = emb
    model.train(was_training)
    if out is None:
        raise ValueError("nothing to encode")
    return out


def top_k(queries: Tensor, corpus: Tensor, k: int, *, query_chunk: int = 1024, corpus_chunk: int = 16384) -> Tensor:
    """Indices (n_queries, k) of the k most cosine-similar corpus rows, computed chunk by chunk."""
    k = min(k, corpus.shape[0])
    q = F.normalize(queries.float(), dim=-1)
    c = F.normalize(corpus.float(), dim=-1)
    result = torch.empty((q.shape[0], k), dtype=torch.long)
    for qs in range(0, q.shape[0], query_chunk):
        qb = q[qs : qs + query_chunk]
        best_scores = torch.full((qb.shape[0], k), float("-inf"))
        best_idx = torch.zeros((qb.shape[0], k), dtype=torch.long)
        for cs in range(0, c.shape[0], corpus_chunk):
            scores = qb @ c[cs : cs + corpus_chunk].T
            kk = min(k, scores.shape[1])
            s, i = scores.topk(kk, dim=1)
            merged_s = torch.cat([best_scores, s], dim=1)
            merged_i = torch.cat([best_idx, i + cs], dim=1)
            best_scores, pos = merged_s.topk(k, dim=1)
            best_idx = merged_i.gather(1, pos)
        result[qs : qs + query_chunk] = best_idx
    return result


def ranking_metrics(ranked: Tensor, relevant: Sequence[frozenset[int]], ks: Sequence[int]) -> dict[str, float]:
    """recall@k for each k, MRR@10 and nDCG@10 from ranked corpus indices."""
    n = len(relevant)
    recall = {k: 0.0 for k in ks}
    mrr = ndcg = 0.0
    for row, rel in zip(ranked.tolist(), relevant, strict=True):
        hits = [doc in rel for doc in row]
        for k in ks:
            recall[k] += sum(hits[:k]) / len(rel)
        for rank, hit in enumerate(hits[:MRR_K], start=1):
            if hit:
                mrr += 1.0 / rank
                break
        dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(hits[:NDCG_K], start=1) if hit)
        idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(rel), NDCG_K) + 1))
        ndcg += dcg / idcg
    out = {f"recall@{k}": recall[k] / n for k in ks}
    out[f"mrr@{MRR_K}"] = mrr / n
    out[f"ndcg@{NDCG_K}"] = ndcg / n
    return out


class RetrievalEvaluator:
    """A callable on a model giving retrieval metrics for a fixed task; ``primary_metric`` is the objective."""

    greater_is_better = True

    def __init__(self, task: RetrievalTask, cache: TokenCache, ks: Sequence[int] = (1, 10), *, primary_metric: str = "recall@10", batch_size: int = 256):
        self.task = task
        self.cache = cache
        self.ks = tuple(sorted(set(ks)))
        self.primary_metric = primary_metric
        self.batch_size = batch_size
        self.query_idx = np.array([cache.index[t] for t in task.queries], dtype=np.int64)
        self.corpus_idx = np.array([cache.index[t] for t in task.corpus], dtype=np.int64)

    def __call__(self, model) -> dict[str, float]:
        q = encode(model, self.cache, self.query_idx, batch_size=self.batch_size)
        c = encode(model, self.cache, self.corpus_idx, batch_size=self.batch_size)
        ranked = top_k(q, c, max(max(self.ks), MRR_K, NDCG_K))
        return ranking_metrics(ranked, self.task.relevant, self.ks)

"""Encoding and retrieval metrics: recall@k, MRR@10 and nDCG@10 of queries against a corpus.

Texts are tokenized once into a :class:`TokenCache`; encoding pads each batch to its own longest text after
sorting by length, and top-k search walks the corpus in chunks so a large corpus never needs a full
query x corpus similarity matrix.
"""

from __future__ import annotations

import contextlib
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
# On CUDA a batch costs about the same host time whatever its size (a launch per kernel), and inference keeps no
# activations: encode in batches of at least this many texts, in bf16 where the card has it.
CUDA_BATCH_SIZE = 1024


def to_device(values, device: torch.device | str, dtype: torch.dtype | None = None) -> Tensor:
    """``values`` (a list or array) as a tensor on ``device``. To CUDA it goes from pinned memory without waiting:
    a plain copy from pageable memory waits until the GPU has finished all queued work, once per tensor."""
    tensor = torch.as_tensor(values, dtype=dtype)
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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
        self.on_device: dict[torch.device, DeviceTokens] = {}  # see device_tokens

    def __getstate__(self) -> dict:
        # the copies on a device stay in their process: Ray ships the cache to workers on other devices
        return {k: v for k, v in self.__dict__.items() if k != "on_device"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.on_device = {}

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


class DeviceTokens:
    """A :class:`TokenCache`'s token ids moved to ``device`` once; each batch is gathered and padded there.

    A batch then costs one small copy of its row indices instead of its padded ids and mask (built on the host,
    then copied). :meth:`features` gives exactly what ``TokenCache.features`` gives.
    """

    def __init__(self, cache: TokenCache, device: torch.device | str):
        self.cache, self.device = cache, torch.device(device)
        self.ids = torch.from_numpy(cache.ids).to(self.device)
        offsets = torch.from_numpy(cache.offsets).to(self.device)
        self.starts, self.lengths = offsets[:-1], offsets[1:] - offsets[:-1]

    def features(self, indices: Sequence[int]) -> dict[str, Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        width = int(self.cache.lengths(indices).max())  # from the host's offsets: reading it from the device would wait
        rows = to_device(indices, self.device)
        positions = torch.arange(width, device=self.device)
        mask = positions < self.lengths[rows, None]
        at = (self.starts[rows, None] + positions).clamp_(max=max(self.ids.numel() - 1, 0))
        input_ids = torch.where(mask, self.ids[at].long(), self.cache.pad_id)
        out = {"input_ids": input_ids, "attention_mask": mask.long()}
        if self.cache.with_token_types:
            out["token_type_ids"] = torch.zeros_like(input_ids)
        return out


def device_tokens(cache: TokenCache, device: torch.device | str) -> DeviceTokens:
    """The cache's :class:`DeviceTokens` on ``device``, made once per cache and device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in cache.on_device:
        cache.on_device[device] = DeviceTokens(cache, device)
    return cache.on_device[device]


def encode(
    model, cache: TokenCache, indices: Sequence[int], *, batch_size: int = 256, device=None, dtype: torch.dtype | None = None,
    on_device: bool = False,
) -> Tensor:
    """Embeddings (float32, on CPU unless ``on_device``) of the cached texts at ``indices``, in that order.

    On CUDA the batches hold at least :data:`CUDA_BATCH_SIZE` texts, their ids come from :class:`DeviceTokens`, and
    the model runs under bf16 autocast where the card supports it (``dtype`` overrides: ``torch.float32`` is plain
    fp32); nothing is read back until the end. The CPU encodes in fp32, as before.
    """
    device = torch.device(device or next(model.parameters()).device)
    cuda = device.type == "cuda"
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_BATCH_SIZE)
    elif cuda:
        batch_size = max(batch_size, CUDA_BATCH_SIZE)
        if dtype is None and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
    autocast = dtype is not None and dtype != torch.float32 and cuda
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise ValueError("nothing to encode")
    order = np.argsort(-cache.lengths(indices), kind="stable")
    tokens = device_tokens(cache, device) if cuda else None
    out: Tensor | None = None
    pieces: list[Tensor] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype) if autocast else contextlib.nullcontext():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            if tokens is not None:
                pieces.append(model(tokens.features(indices[rows]))["sentence_embedding"].float())
                continue
            emb = model(cache.features(indices[rows], device))["sentence_embedding"].float().cpu()
            if out is None:
                out = torch.empty((len(indices), emb.shape[1]), dtype=torch.float32)
            out[torch.from_numpy(rows)] = emb
        if tokens is not None:
            out = torch.cat(pieces)[to_device(np.argsort(order, kind="stable"), device)]
    model.train(was_training)
    return out if on_device or out.device.type == "cpu" else out.cpu()


def top_k(queries: Tensor, corpus: Tensor, k: int, *, query_chunk: int = 1024, corpus_chunk: int = 16384) -> Tensor:
    """Indices (n_queries, k) of the k most cosine-similar corpus rows, computed chunk by chunk, on the queries'
    device (the result too)."""
    k = min(k, corpus.shape[0])
    q = F.normalize(queries.float(), dim=-1)
    c = F.normalize(corpus.float().to(q.device), dim=-1)
    result = torch.empty((q.shape[0], k), dtype=torch.long, device=q.device)
    for qs in range(0, q.shape[0], query_chunk):
        qb = q[qs : qs + query_chunk]
        best_scores = torch.full((qb.shape[0], k), float("-inf"), device=q.device)
        best_idx = torch.zeros((qb.shape[0], k), dtype=torch.long, device=q.device)
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
        self.dtype: torch.dtype | None = None  # encode's default: bf16 on CUDA where supported, else fp32
        self.query_idx = np.array([cache.index[t] for t in task.queries], dtype=np.int64)
        self.corpus_idx = np.array([cache.index[t] for t in task.corpus], dtype=np.int64)

    def __call__(self, model) -> dict[str, float]:
        # on CUDA the embeddings and the top-k search stay on the card; only the ranking comes back
        q = encode(model, self.cache, self.query_idx, batch_size=self.batch_size, dtype=self.dtype, on_device=True)
        c = encode(model, self.cache, self.corpus_idx, batch_size=self.batch_size, dtype=self.dtype, on_device=True)
        ranked = top_k(q, c, max(max(self.ks), MRR_K, NDCG_K))
        return ranking_metrics(ranked.cpu(), self.task.relevant, self.ks)

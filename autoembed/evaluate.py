"""``autoembed evaluate``: retrieval metrics of any model folder on a query file and a corpus."""

from __future__ import annotations

import time
from pathlib import Path

from autoembed.data import read_corpus, read_query_file
from autoembed.evaluation import RetrievalEvaluator, TokenCache
from autoembed.model import load_encoder
from autoembed.training import resolve_device


def evaluate_model(model_ref: str, queries: Path, corpus: Path, *, ks=(1, 10), batch_size: int = 256, max_seq_length: int | None = None, device: str = "auto", console=None) -> dict[str, float]:
    """Load ``model_ref`` and measure recall@k, MRR@10 and nDCG@10 of ``queries`` against ``corpus``."""
    corpus_map = read_corpus(corpus)
    task = read_query_file(queries, corpus_map)
    model = load_encoder(model_ref, device=resolve_device(device), max_seq_length=max_seq_length)
    started = time.perf_counter()
    if console is not None:
        console.print(f"encoding {len(task.queries)} queries and {len(task.corpus)} documents ...", highlight=False)
    cache = TokenCache.build(model.tokenizer, [*task.queries, *task.corpus], model.max_seq_length)
    metrics = RetrievalEvaluator(task, cache, ks, batch_size=batch_size)(model)
    if console is not None:
        console.print(f"done in {time.perf_counter() - started:.1f}s", highlight=False)
    return metrics

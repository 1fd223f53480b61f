"""TPE with a bounded history against Optuna's TPE on the whole study: ask time and what each finds.

The default space's TPE (multivariate, grouped, as ``autoembed search`` builds it) runs ``--trials`` sequential trials
in memory on the scale simulation's objective (``scale_sim.learning_curve``: the value a simulated trial ends at,
plus noise), once with ``sampler.max_history`` at its default and once unbounded (``null``), for each seed. Both
arms run one after the other in one process, so their times compare.

    python benchmarks/tpe_history.py [--trials 1000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def run(space_file: Path, history: int | None, seed: int, trials: int) -> dict[str, float]:
    import optuna
    from scale_sim import HIDDEN, TOTAL_STEPS, learning_curve

    from autoembed.search import base_config
    from autoembed.space import SearchSpace
    from autoembed.trials import SearchOptions

    space = SearchSpace.from_yaml_file(str(space_file))
    space.sampler = space.sampler.model_copy(update={"max_history": history})
    options = SearchOptions(study="tpe-history", model="simulated-model", train="train.jsonl", space=str(space_file))
    base = base_config(options, space.metric)
    study = optuna.create_study(direction="maximize", sampler=space.build_sampler(seed=seed, n_workers=1))
    for params in space.starting_params(hidden_size=HIDDEN):
        study.enqueue_trial(params)
    noise = random.Random(seed)
    asks, values = [], []
    for _ in range(trials):
        t0 = time.perf_counter()
        trial = study.ask()
        config = space.sample(trial, base, hidden_size=HIDDEN)
        asks.append(time.perf_counter() - t0)
        level, k = learning_curve(config.to_dict())
        value = level * (1 - math.exp(-TOTAL_STEPS / k)) + noise.gauss(0, 0.01)
        values.append(value)
        study.tell(trial, value)
    tail = values[len(values) // 2 :]
    return {
        "best": max(values),
        "tail_mean": statistics.fmean(tail),
        "ask_ms_last20": 1000 * statistics.median(asks[-20:]),
        "ask_ms_100": 1000 * statistics.median(asks[80:100]),
    }


def main(argv: list[str] | None = None) -> int:
    import optuna

    from autoembed.pruners import DEFAULT_HISTORY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "default.yaml")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: dict[str, list[dict[str, float]]] = {}
    for seed in range(args.seeds):
        for label, history in ((f"max_history {DEFAULT_HISTORY}", DEFAULT_HISTORY), ("unbounded", None)):
            result = run(args.space, history, seed, args.trials)
            rows.setdefault(label, []).append(result)
            print(f"seed {seed} {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True)
    print(f"\n{args.trials} sequential trials, {args.seeds} seeds (mean over seeds):")
    print("| TPE | best value | mean value, 2nd half | ask ms at 80-99 | ask ms, last 20 |")
    print("|---|---|---|---|---|")
    for label, results in rows.items():
        mean = {k: statistics.fmean(r[k] for r in results) for k in results[0]}
        print(f"| {label} | {mean['best']:.4f} | {mean['tail_mean']:.4f} | {mean['ask_ms_100']:.0f} | {mean['ask_ms_last20']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

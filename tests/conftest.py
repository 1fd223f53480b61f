"""Shared fixtures: a tiny random BERT with a WordPiece tokenizer, toy retrieval data, and a local Ray whose
workers run a hook before each trial trains."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "acute chronic left right upper lower fever pain infection fracture heart lung kidney liver skin bone "
    "arm leg knee hip eye ear nose throat blood pressure diabetes asthma cancer tumor injury burn cough "
    "headache nausea rash ulcer stroke sepsis anemia obesity sprain of the with without and in due to"
).split()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def build_tiny_bert(folder: Path, *, hidden: int = 32, heads: int = 4, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,-")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary itself (``vocab=``); ``vocab_file=`` is silently ignored there
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def make_toy_data(folder: Path, *, n_docs: int = 24, queries_per_doc: int = 3, seed: int = 0) -> dict[str, Path]:
    """A toy retrieval task: each document is three words; its queries share two of them."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    docs = []
    seen = set()
    while len(docs) < n_docs:
        words = tuple(rng.sample(WORDS[:48], 3))
        if words in seen:
            continue
        seen.add(words)
        docs.append({"_id": f"d{len(docs)}", "text": " ".join(words)})
    rows = []
    for doc in docs:
        words = doc["text"].split()
        for _ in range(queries_per_doc):
            kept = rng.sample(words, 2)
            rows.append({"query": " ".join(kept + [rng.choice(WORDS[48:])]), "positive": doc["text"], "doc_id": doc["_id"]})
    rng.shuffle(rows)
    paths = {"corpus": folder / "corpus.jsonl", "train": folder / "train.jsonl", "val": folder / "val.jsonl"}
    paths["corpus"].write_text("".join(json.dumps(d) + "\n" for d in docs))
    train_docs = {d["_id"] for d in docs[: n_docs * 3 // 4]}
    paths["train"].write_text("".join(json.dumps(r) + "\n" for r in rows if r["doc_id"] in train_docs))
    paths["val"].write_text("".join(json.dumps(r) + "\n" for r in rows if r["doc_id"] not in train_docs))
    return paths


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    return make_toy_data(tmp_path_factory.mktemp("toy"))


def before_each_trial(before):
    """Ray's ``worker_process_setup_hook`` that makes every trial in that worker call ``before(config)`` before it
    trains (to fail it, or to take memory from inside it). ``before`` must be made inside a function, so that Ray
    pickles it by value: workers cannot import test modules."""

    def install():
        import autoembed.raytune as raytune

        real = raytune.train

        def train(config, **kwargs):
            before(config)
            return real(config, **kwargs)

        raytune.train = train

    return install


@contextlib.contextmanager
def ray_with_hook(hook, **init):
    """A local Ray whose workers run ``hook`` as they start; a search reuses it (its ensure_ray returns at once)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()  # another module's Ray has no hook
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"worker_process_setup_hook": hook}, **init)
    try:
        yield
    finally:
        ray.shutdown()

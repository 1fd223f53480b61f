"""Encoding from the token cache, chunked top-k, and recall / MRR / nDCG on hand-made rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autoembed.config import DataConfig, TrialConfig
from autoembed.data import RetrievalTask
from autoembed.evaluation import DeviceTokens, RetrievalEvaluator, TokenCache, encode, ranking_metrics, top_k
from autoembed.model import build_model

TEXTS = [
    "acute fever",
    "left knee fracture with pain",
    "pain",
    "acute fever",
    "chronic kidney liver disease of the upper arm",
    "rash",
]


@pytest.fixture(scope="module")
def model(tiny_model):
    return build_model(TrialConfig(model=str(tiny_model), data=DataConfig(train="unused.jsonl")))


def brute_top_k(q: torch.Tensor, c: torch.Tensor, k: int) -> torch.Tensor:
    scores = F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T
    return scores.argsort(dim=1, descending=True)[:, : min(k, c.shape[0])]


@pytest.mark.parametrize(
    ("n_queries", "n_corpus", "k", "query_chunk", "corpus_chunk"),
    [
        (7, 50, 5, 2, 3),  # chunks smaller than k
        (13, 100, 1, 4, 7),
        (3, 30, 30, 2, 5),  # k is the whole corpus
        (5, 4, 10, 1, 1),  # k larger than the corpus
        (9, 64, 10, 1024, 16384),  # one chunk
        (4, 33, 8, 3, 8),  # chunk boundary at k
    ],
)
def test_chunked_top_k_equals_brute_force(n_queries, n_corpus, k, query_chunk, corpus_chunk):
    gen = torch.Generator().manual_seed(n_queries * 1000 + n_corpus)
    q = torch.randn(n_queries, 16, generator=gen)
    c = torch.randn(n_corpus, 16, generator=gen) * torch.rand(
        n_corpus, 1, generator=gen
    )  # lengths differ: cosine, not dot
    got = top_k(q, c, k, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    assert got.shape == (n_queries, min(k, n_corpus))
    assert torch.equal(got, brute_top_k(q, c, k))


def test_ranking_metrics_on_a_hand_made_ranking():
    ranked = torch.tensor(
        [
            [2, 0, 1, 3, 4, 5, 6, 7, 8, 9],  # hit at rank 1
            [0, 1, 5, 2, 3, 4, 6, 7, 8, 9],  # hit at rank 3
            [7, 0, 1, 2, 4, 5, 6, 8, 9, 3],  # two relevant: ranks 1 and 10
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],  # relevant document not retrieved
        ]
    )
    relevant = [frozenset({2}), frozenset({5}), frozenset({3, 7}), frozenset({11})]
    metrics = ranking_metrics(ranked, relevant, ks=(1, 3, 10))
    ndcg_two = (1 + 1 / math.log2(11)) / (1 + 1 / math.log2(3))
    expected = {
        "recall@1": (1 + 0 + 0.5 + 0) / 4,
        "recall@3": (1 + 1 + 0.5 + 0) / 4,
        "recall@10": (1 + 1 + 1 + 0) / 4,
        "mrr@10": (1 + 1 / 3 + 1 + 0) / 4,
        "ndcg@10": (1 + 0.5 + ndcg_two + 0) / 4,
    }
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key


def test_mrr_and_ndcg_count_only_the_first_ten():
    ranked = torch.tensor([list(range(1, 11)) + [0]])  # the relevant document 0 is at rank 11
    metrics = ranking_metrics(ranked, [frozenset({0})], ks=(1, 11))
    assert metrics == {"recall@1": 0.0, "recall@11": 1.0, "mrr@10": 0.0, "ndcg@10": 0.0}


def test_token_cache_deduplicates_truncates_and_pads(model):
    cache = TokenCache.build(model.tokenizer, TEXTS, max_length=6, chunk=2)
    assert cache.texts == list(dict.fromkeys(TEXTS))
    assert cache.index["acute fever"] == 0
    lengths = cache.lengths(range(len(cache.texts)))
    reference = [len(model.tokenizer(t, truncation=True, max_length=6)["input_ids"]) for t in cache.texts]
    assert lengths.tolist() == reference
    assert max(reference) == 6  # the long text was cut
    features = cache.features([2, 1])
    assert features["input_ids"].shape == (2, max(lengths[2], lengths[1]))
    assert features["attention_mask"].sum(1).tolist() == [lengths[2], lengths[1]]
    assert features["input_ids"][0, lengths[2] :].eq(cache.pad_id).all()
    assert (
        features["input_ids"][1].tolist() == model.tokenizer(cache.texts[1], truncation=True, max_length=6)["input_ids"]
    )
    assert cache.with_token_types and features["token_type_ids"].eq(0).all()


def test_encode_keeps_order_and_matches_sentence_transformers(model):
    texts = list(dict.fromkeys(TEXTS))
    cache = TokenCache.build(model.tokenizer, texts, 64)
    order = [3, 0, 4, 1, 2]
    model.train()
    ours = encode(model, cache, order, batch_size=2)
    assert model.training  # encode leaves the mode as it found it
    theirs = model.encode([texts[i] for i in order], convert_to_tensor=True)
    assert ours.dtype == torch.float32 and ours.shape == (5, 32)
    assert (ours - theirs).abs().max().item() < 1e-5
    assert (encode(model, cache, order, batch_size=64) - ours).abs().max().item() < 1e-5


def test_evaluator_equals_brute_force_on_sentence_transformers_embeddings(model):
    gen = np.random.default_rng(0)
    corpus = [
        " ".join(gen.choice(["fever", "pain", "knee", "arm", "lung", "skin", "blood", "burn"], 3)) for _ in range(30)
    ]
    corpus = list(dict.fromkeys(corpus))
    queries = [" ".join(gen.choice(["acute", "left", "fever", "pain", "knee", "cough"], 2)) for _ in range(12)]
    queries = list(dict.fromkeys(queries))
    relevant = [frozenset({int(gen.integers(len(corpus)))}) for _ in queries]
    task = RetrievalTask(queries, corpus, relevant)
    cache = TokenCache.build(model.tokenizer, queries + corpus, 64)
    metrics = RetrievalEvaluator(task, cache, ks=(1, 5), batch_size=4)(model)
    q = model.encode(queries, convert_to_tensor=True)
    c = model.encode(corpus, convert_to_tensor=True)
    expected = ranking_metrics(brute_top_k(q, c, 10), relevant, ks=(1, 5))
    assert metrics == pytest.approx(expected)
    assert list(metrics) == ["recall@1", "recall@5", "mrr@10", "ndcg@10"]


def test_encode_on_cpu_uses_small_batches(model):
    texts = [f"pain {'of the arm ' * (i % 5)}{i}" for i in range(70)]
    cache = TokenCache.build(model.tokenizer, texts, 64)
    sizes: list[int] = []
    handle = model[0].register_forward_pre_hook(lambda module, args: sizes.append(args[0]["input_ids"].shape[0]))
    try:
        encode(model, cache, range(70), batch_size=256)
        assert sizes == [32, 32, 6]  # 256 is slower on CPU
        sizes.clear()
        encode(model, cache, range(70), batch_size=20)
        assert sizes == [20, 20, 20, 10]
    finally:
        handle.remove()


def test_device_tokens_pad_exactly_like_the_host_cache(model):
    """The batches CUDA gathers on the card are the host's, token for token (here gathered on the CPU)."""
    texts = [f"pain {'of the arm ' * (i % 7)}{i}" for i in range(40)] + ["", "fever"]
    cache = TokenCache.build(model.tokenizer, texts, 12)
    on_device = DeviceTokens(cache, "cpu")
    gen = np.random.default_rng(0)
    for size in (1, 2, 5, 17, len(cache.texts)):
        idx = gen.choice(len(cache.texts), size, replace=False).tolist()
        host, gathered = cache.features(idx), on_device.features(idx)
        assert list(host) == list(gathered)
        for key in host:
            assert gathered[key].dtype == host[key].dtype and torch.equal(gathered[key], host[key]), key


def test_a_pickled_cache_leaves_its_device_copies_behind(model):
    """Ray ships the prepared cache to workers; a copy made on the driver's device must not travel with it."""
    import pickle

    from autoembed.evaluation import device_tokens

    cache = TokenCache.build(model.tokenizer, TEXTS, 16)
    assert device_tokens(cache, "cpu") is device_tokens(cache, "cpu")  # made once per device
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.on_device == {} and copy.texts == cache.texts and copy.index == cache.index
    assert torch.equal(device_tokens(copy, "cpu").features([0, 1])["input_ids"], cache.features([0, 1])["input_ids"])

"""Architecture choices that start from the pretrained function: a residual adapter is the identity at step 0 and
a PCA-initialised projection is a rotation of the base embeddings at full width, so an architected trial starts
ranking as the plain model does."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer

from autoembed.config import TrialConfig
from autoembed.data import read_corpus, read_examples
from autoembed.errors import AutoembedError
from autoembed.evaluation import TokenCache, encode, top_k
from autoembed.mining import BaseEmbeddings, pca_basis, pca_texts
from autoembed.model import build_model, load_encoder
from autoembed.training import prepare, train
from tests.test_training import toy_config, weights


def _embed(model, texts):
    cache = TokenCache.build(model.tokenizer, texts, 32)
    return encode(model, cache, [cache.index[t] for t in texts])


@pytest.fixture(scope="module")
def texts(toy_data):
    corpus = read_corpus(toy_data["corpus"])
    return [ex.anchor for ex in read_examples(toy_data["val"], corpus)], list(corpus.values())


@pytest.mark.parametrize(("depth", "activation"), [(1, "relu"), (2, "gelu"), (2, "tanh")])
def test_a_residual_adapter_is_the_identity_at_step_0(tiny_model, toy_data, texts, depth, activation):
    queries, docs = texts
    plain = build_model(toy_config(tiny_model, toy_data))
    adapted = build_model(toy_config(tiny_model, toy_data, **{
        "architecture.adapter_depth": depth, "architecture.adapter_width": 48, "architecture.adapter_residual": True,
        "architecture.adapter_activation": activation, "architecture.head_dropout": 0.1,
    }))
    assert sum(p.numel() for p in adapted.parameters()) > sum(p.numel() for p in plain.parameters())
    a, b = _embed(plain, queries + docs), _embed(adapted, queries + docs)
    assert b.shape == a.shape and torch.allclose(a, b, atol=1e-6)
    n = len(queries)
    assert torch.equal(top_k(a[:n], a[n:], 5), top_k(b[:n], b[n:], 5))


def test_a_residual_adapter_trains_and_saves_as_stock_modules(tiny_model, toy_data, tmp_path):
    config = toy_config(tiny_model, toy_data, **{"architecture.adapter_depth": 1, "architecture.adapter_width": 16,
                                                 "architecture.adapter_residual": True})
    before = weights(build_model(config))
    result = train(config)
    after = weights(result.model)
    # the zero-initialised half moved: the adapter is no longer the identity
    inner = [k for k in after if k.endswith("linear.weight") and after[k].shape == (32, 48)]
    assert inner and not torch.equal(before[inner[0]][:, 32:], after[inner[0]][:, 32:])
    result.model.save(str(tmp_path / "m"))
    modules = json.loads((tmp_path / "m" / "modules.json").read_text())
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)
    loaded = SentenceTransformer(str(tmp_path / "m"), trust_remote_code=False, local_files_only=True)
    texts = ["acute fever with cough", "left knee fracture"]
    assert torch.allclose(_embed(result.model, texts), _embed(loaded, texts), atol=1e-6)


def test_pca_basis_is_orthonormal_best_first_and_sign_fixed():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen) * torch.tensor([5.0, 4, 3, 2, 1, 0.5, 0.2, 0.1])
    v = pca_basis(x)
    assert torch.allclose(v.T @ v, torch.eye(8), atol=1e-5)
    xn = F.normalize(x, dim=-1)
    energy = ((xn @ v) ** 2).mean(0)
    assert torch.all(energy[:-1] >= energy[1:] - 1e-6)
    assert torch.equal(pca_basis(x), v) and torch.all(v.gather(0, v.abs().argmax(0, keepdim=True)) > 0)


def test_a_full_width_pca_projection_ranks_as_the_plain_model(tiny_model, toy_data, texts):
    queries, docs = texts
    config = toy_config(tiny_model, toy_data, **{"architecture.output_dim": 32, "architecture.projection_init": "pca"})
    prepared = prepare(config)
    encoder = load_encoder(str(tiny_model))
    expected = pca_basis(BaseEmbeddings(encoder, encoder.tokenizer, config.data.max_seq_length)(pca_texts(prepared.dataset.train)))
    assert torch.allclose(prepared.pca, expected, atol=1e-5)
    plain = _embed(build_model(toy_config(tiny_model, toy_data)), queries + docs)
    projected = _embed(build_model(config, pca=prepared.pca), queries + docs)
    # equal up to the PCA rotation
    assert torch.allclose(projected, plain @ prepared.pca, atol=1e-5)
    n = len(queries)
    assert torch.equal(top_k(plain[:n], plain[n:], 5), top_k(projected[:n], projected[n:], 5))
    # a narrower one keeps the leading directions, and training builds it from the shared preparation
    narrow = config.replace(**{"architecture.output_dim": 8})
    emb = _embed(build_model(narrow, pca=prepared.pca), queries)
    assert torch.allclose(emb, F.normalize(F.normalize(plain[:n], dim=-1) @ prepared.pca[:, :8], dim=-1), atol=1e-5)
    assert train(narrow, prepared=prepared).steps == 4


def test_pca_needs_a_basis_and_a_base_width_input(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data, **{"architecture.output_dim": 8, "architecture.projection_init": "pca"})
    with pytest.raises(AutoembedError, match="PCA"):
        build_model(config)
    with pytest.raises(AutoembedError, match="adapter_residual"):
        TrialConfig.from_dict({**config.to_dict(), "architecture": {"output_dim": 8, "projection_init": "pca", "adapter_depth": 1}})

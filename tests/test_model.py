"""The model a config builds: each architecture choice changes what it should, and the saved folder reloads."""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from autoembed.config import ArchitectureConfig, DataConfig, TrainingConfig, TrialConfig, embedding_dim
from autoembed.errors import AutoembedError
from autoembed.evaluation import TokenCache, encode
from autoembed.model import (
    backbone_info,
    build_model,
    freeze_lowest_layers,
    load_encoder,
    parameter_groups,
    resolve_model_path,
)

TEXTS = [
    "acute fever with cough",
    "left knee fracture",
    "pain",
    "chronic kidney liver disease of the upper arm",
    "rash",
]


def config_for(model: Path, seed: int = 42, **arch) -> TrialConfig:
    return TrialConfig(
        model=str(model),
        data=DataConfig(train="unused.jsonl"),
        architecture=ArchitectureConfig(**arch),
        training=TrainingConfig(seed=seed),
    )


def embed(model, texts=TEXTS) -> torch.Tensor:
    cache = TokenCache.build(model.tokenizer, texts, 64)
    return encode(model, cache, range(len(texts)), batch_size=2)


def saved_hf_config(model, folder: Path) -> dict:
    model.save(str(folder))
    return json.loads((folder / "config.json").read_text())


def test_backbone_info_reads_the_hf_config(tiny_model):
    info = backbone_info(str(tiny_model))
    assert (info.hidden_size, info.num_heads, info.num_layers, info.model_type) == (32, 4, 2, "bert")
    assert info.path == info.transformer_path == tiny_model


# (architecture, embedding size, Dense modules, Dropout modules, ends with Normalize)
SHAPES = [
    ({}, 32, 0, 0, True),
    ({"output_dim": 8}, 8, 1, 0, True),
    ({"adapter_depth": 1, "adapter_width": 24}, 24, 1, 0, True),
    ({"adapter_depth": 3, "adapter_width": 16, "output_dim": 5, "head_dropout": 0.1}, 5, 4, 4, True),
    ({"adapter_depth": 2, "adapter_width": 12, "normalize": False}, 12, 2, 0, False),
]


@pytest.mark.parametrize(("arch", "dim", "n_dense", "n_dropout", "normalized"), SHAPES)
def test_head_shape(tiny_model, arch, dim, n_dense, n_dropout, normalized):
    config = config_for(tiny_model, **arch)
    model = build_model(config)
    kinds = [type(m).__name__ for m in model]
    assert kinds[:2] == ["Transformer", "Pooling"]
    assert kinds.count("Dense") == n_dense
    assert kinds.count("Dropout") == n_dropout
    assert (kinds[-1] == "Normalize") is normalized
    emb = embed(model)
    assert emb.shape == (len(TEXTS), dim) == (len(TEXTS), embedding_dim(config.architecture, 32))
    norms = emb.norm(dim=1)
    if normalized:
        torch.testing.assert_close(norms, torch.ones(len(TEXTS)))
    else:
        assert not torch.allclose(norms, torch.ones(len(TEXTS)))


def test_adapter_activation_is_used(tiny_model):
    model = build_model(
        config_for(tiny_model, adapter_depth=1, adapter_width=16, adapter_activation="relu", normalize=False)
    )
    assert (embed(model) >= 0).all()  # relu output
    model = build_model(
        config_for(tiny_model, adapter_depth=1, adapter_width=16, adapter_activation="tanh", normalize=False)
    )
    emb = embed(model)
    assert (emb < 0).any() and (emb.abs() < 1).all()


@pytest.mark.parametrize(
    ("heads", "expect"),
    [
        (None, nullcontext(4)),
        (1, nullcontext(1)),
        (2, nullcontext(2)),
        (8, nullcontext(8)),
        (
            3,
            pytest.raises(
                AutoembedError,
                match=r"^architecture\.attention_heads: must divide the backbone's hidden size 32, got 3$",
            ),
        ),
        (5, pytest.raises(AutoembedError, match=r"must divide the backbone's hidden size 32, got 5")),
    ],
)
def test_attention_heads_land_in_the_saved_config(tiny_model, tmp_path, heads, expect):
    with expect as expected_heads:
        model = build_model(config_for(tiny_model, attention_heads=heads))
        assert model[0].auto_model.config.num_attention_heads == expected_heads
        assert saved_hf_config(model, tmp_path / "saved")["num_attention_heads"] == expected_heads


def test_resplit_heads_change_the_embeddings_but_keep_the_weights(tiny_model):
    four = build_model(config_for(tiny_model))
    two = build_model(config_for(tiny_model, attention_heads=2))
    for (name, a), (_, b) in zip(four[0].named_parameters(), two[0].named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.allclose(embed(four), embed(two))


@pytest.mark.parametrize(
    ("hidden", "attention", "expected"),
    [
        (None, None, (0.1, 0.1)),  # the backbone's own
        (0.0, None, (0.0, 0.1)),
        (0.25, 0.4, (0.25, 0.4)),
    ],
)
def test_dropout_settings_land_in_the_saved_config(tiny_model, tmp_path, hidden, attention, expected):
    model = build_model(config_for(tiny_model, hidden_dropout=hidden, attention_dropout=attention))
    saved = saved_hf_config(model, tmp_path / "saved")
    assert (saved["hidden_dropout_prob"], saved["attention_probs_dropout_prob"]) == expected
    dropouts = {m.p for m in model[0].auto_model.modules() if isinstance(m, torch.nn.Dropout)}
    assert dropouts == set(expected)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_pooling(tiny_model, pooling):
    model = build_model(config_for(tiny_model, pooling=pooling, normalize=False))
    model.eval()
    cache = TokenCache.build(model.tokenizer, TEXTS, 64)
    features = cache.features(range(len(TEXTS)))
    with torch.inference_mode():
        tokens = model[0](dict(features))["token_embeddings"]
        got = model(dict(features))["sentence_embedding"]
    mask = features["attention_mask"].unsqueeze(-1).bool()
    expected = {
        "mean": (tokens * mask).sum(1) / mask.sum(1),
        "cls": tokens[:, 0],
        "max": tokens.masked_fill(~mask, float("-inf")).max(1).values,
    }[pooling]
    torch.testing.assert_close(got, expected)
    others = [p for p in ("mean", "cls", "max") if p != pooling]
    with torch.inference_mode():
        for other in others:
            assert not torch.allclose(
                got,
                build_model(config_for(tiny_model, pooling=other, normalize=False)).eval()(dict(features))[
                    "sentence_embedding"
                ],
            )


@pytest.mark.parametrize(
    "arch",
    [
        {},
        {
            "attention_heads": 2,
            "pooling": "max",
            "adapter_depth": 2,
            "adapter_width": 16,
            "adapter_activation": "gelu",
            "output_dim": 8,
            "head_dropout": 0.2,
        },
        {"pooling": "cls", "hidden_dropout": 0.3, "normalize": False, "output_dim": 6},
    ],
)
def test_saved_folder_loads_in_sentence_transformers_with_equal_embeddings(tiny_model, tmp_path, arch):
    from sentence_transformers import SentenceTransformer

    model = build_model(config_for(tiny_model, **arch))
    # give the head and the backbone weights no fresh initialization could reproduce
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ours = embed(model)
    model.save(str(tmp_path / "saved"))
    loaded = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    theirs = loaded.encode(TEXTS, convert_to_tensor=True, batch_size=3)
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max().item() < 1e-5
    assert (
        load_encoder(str(tmp_path / "saved")).encode(TEXTS, convert_to_tensor=True) - ours
    ).abs().max().item() < 1e-5


def test_head_weights_are_seeded(tiny_model):
    arch = {"adapter_depth": 1, "adapter_width": 16, "output_dim": 8}
    a = embed(build_model(config_for(tiny_model, seed=1, **arch)))
    b = embed(build_model(config_for(tiny_model, seed=1, **arch)))
    c = embed(build_model(config_for(tiny_model, seed=2, **arch)))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_output_dim_wider_than_the_head_is_refused(tiny_model):
    with pytest.raises(
        AutoembedError, match=r"^architecture\.output_dim: must be at most the projection's input width 16, got 17$"
    ):
        build_model(config_for(tiny_model, adapter_depth=1, adapter_width=16, output_dim=17))


def test_load_encoder_on_a_plain_hf_folder_mean_pools(tiny_model):
    encoder = load_encoder(str(tiny_model))
    assert [type(m).__name__ for m in encoder] == ["Transformer", "Pooling"]
    assert encoder.max_seq_length == 64  # the backbone's position limit
    built = build_model(config_for(tiny_model, pooling="mean", normalize=False))
    torch.testing.assert_close(embed(encoder), embed(built))


def test_parameter_groups_split_backbone_and_head(tiny_model):
    model = build_model(config_for(tiny_model, adapter_depth=1, adapter_width=16, output_dim=8))
    backbone, head = parameter_groups(model)
    assert all(name.startswith("0.") for name, _ in backbone)
    assert [name for name, _ in head] == ["2.linear.weight", "2.linear.bias", "3.linear.weight", "3.linear.bias"]
    assert len(backbone) + len(head) == len(list(model.parameters()))
    assert parameter_groups(build_model(config_for(tiny_model)))[1] == []


@pytest.mark.parametrize(
    ("n", "expect"),
    [
        (0, nullcontext(0)),
        (1, nullcontext(1)),
        (2, nullcontext(2)),
        (
            3,
            pytest.raises(
                AutoembedError, match=r"^training\.freeze_layers: must be at most the backbone's 2 layers, got 3$"
            ),
        ),
    ],
)
def test_freeze_lowest_layers(tiny_model, n, expect):
    model = build_model(config_for(tiny_model))
    with expect as frozen:
        assert freeze_lowest_layers(model, n) == frozen
        bert = model[0].auto_model
        assert all(p.requires_grad == (n == 0) for p in bert.embeddings.parameters())
        for i, layer in enumerate(bert.encoder.layer):
            assert all(p.requires_grad == (i >= n) for p in layer.parameters())
        backbone, _ = parameter_groups(model)
        assert not any(".embeddings." in name for name, _ in backbone) or n == 0


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        (
            "{tmp}/absent",
            "model '{tmp}/absent': no such folder (give a local folder or package:NAME; hub names are not downloaded)",
        ),
        ("{tmp}", "model '{tmp}': folder has neither config.json nor modules.json"),
        (
            "package:no_such_model_pkg",
            "model 'package:no_such_model_pkg': no installed Python package 'no_such_model_pkg' (pip install it)",
        ),
    ],
)
def test_model_references_that_cannot_resolve(tmp_path, ref, error):
    ref = ref.format(tmp=tmp_path)
    with pytest.raises(AutoembedError, match="^model: " + re.escape(error.format(tmp=tmp_path)) + "$"):
        resolve_model_path(ref)

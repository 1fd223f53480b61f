"""CUDA paths: bf16/fp16 autocast training, and a trial on a GPU slice. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from autoembed.config import TrialConfig
from autoembed.evaluation import encode
from autoembed.training import train

pytestmark = pytest.mark.gpu


def _config(tiny_model, toy_data, precision: str) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "model": str(tiny_model),
            "data": {"train": str(toy_data["train"]), "val": str(toy_data["val"]), "corpus": str(toy_data["corpus"]), "max_seq_length": 16},
            "architecture": {"adapter_depth": 1, "adapter_width": 24, "output_dim": 16},
            "training": {"max_steps": 12, "batch_size": 8, "backbone_lr": 1e-3, "precision": precision, "device": "cuda"},
            "evaluation": {"every_steps": 6, "metric": "mrr@10"},
        }
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_mixed_precision_training_on_cuda(tiny_model, toy_data, precision):
    from autoembed.model import build_model

    config = _config(tiny_model, toy_data, precision)
    before = build_model(config, device="cuda")
    start = {n: p.detach().clone() for n, p in before.named_parameters()}
    result = train(config)
    assert next(result.model.parameters()).device.type == "cuda"
    assert next(result.model.parameters()).dtype == torch.float32  # autocast: weights stay fp32
    moved = [n for n, p in result.model.named_parameters() if not torch.equal(p.detach(), start[n])]
    assert len(moved) > len(start) // 2
    assert 0.0 <= result.value <= 1.0 and len(result.history) == 2
    emb = encode(result.model, _cache(result, config), [0, 1, 2])
    assert torch.isfinite(emb).all()


def _cache(result, config):
    from autoembed.training import prepare

    return prepare(config).cache


def test_bf16_and_fp32_agree_roughly(tiny_model, toy_data):
    fp32 = train(_config(tiny_model, toy_data, "fp32"))
    bf16 = train(_config(tiny_model, toy_data, "bf16"))
    assert abs(fp32.value - bf16.value) < 0.35

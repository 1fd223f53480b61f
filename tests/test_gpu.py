"""CUDA paths: bf16/fp16 autocast training, and a trial on a GPU slice. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from conftest import before_each_trial, ray_with_hook

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


def test_evaluation_in_bf16_ranks_like_fp32(tiny_model, toy_data):
    """Evaluation on CUDA encodes in bf16 in large batches; the metrics stay those of fp32 within bf16's noise."""
    from autoembed.evaluation import RetrievalEvaluator
    from autoembed.model import build_model
    from autoembed.training import prepare

    config = _config(tiny_model, toy_data, "fp32")
    prepared = prepare(config)
    model = build_model(config, device="cuda", info=prepared.info)
    ids = list(range(len(prepared.cache.texts)))
    fp32 = encode(model, prepared.cache, ids, dtype=torch.float32)
    bf16 = encode(model, prepared.cache, ids)
    cpu = encode(model.to("cpu"), prepared.cache, ids)
    model.to("cuda")
    assert fp32.device.type == bf16.device.type == "cpu" and bf16.dtype == torch.float32
    assert torch.allclose(fp32, cpu, atol=1e-4)  # the ids gathered on the card are the host's
    cos = torch.nn.functional.cosine_similarity(fp32, bf16, dim=-1)
    assert cos.min() > 0.98, cos.min()
    evaluator = RetrievalEvaluator(prepared.val_task, prepared.cache, config.evaluation.k, primary_metric="mrr@10")
    in_bf16 = evaluator(model)
    evaluator.dtype = torch.float32
    in_fp32 = evaluator(model)
    assert in_bf16.keys() == in_fp32.keys()
    # bf16 may swap near-tied documents of this random model: a few queries' ranks at most
    tolerance = 3 / len(prepared.val_task.queries)
    assert all(abs(in_bf16[k] - in_fp32[k]) <= tolerance for k in in_fp32), (in_bf16, in_fp32)


def test_a_nan_loss_fails_on_cuda_at_its_step(tiny_model, toy_data, monkeypatch):
    """On CUDA the loss is read back every SYNC_EVERY steps; a NaN still fails the trial, naming the step it went bad."""
    import autoembed.training
    from autoembed.errors import TrialFailed

    real = autoembed.training.compute_loss
    calls = {"n": 0}

    def nan_at_step_3(config, batch):
        calls["n"] += 1
        loss = real(config, batch)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(autoembed.training, "compute_loss", nan_at_step_3)
    config = _config(tiny_model, toy_data, "bf16").replace(**{"training.max_steps": 60, "evaluation.every_steps": None})
    with pytest.raises(TrialFailed, match="^loss is nan at step 3$"):
        train(config)


def test_compiled_training_on_cuda(tiny_model, toy_data):
    config = _config(tiny_model, toy_data, "bf16").replace(**{"training.compile": True})
    result = train(config)
    assert result.model[0].auto_model._compiled_call_impl is not None
    assert 0.0 <= result.value <= 1.0 and len(result.history) == 2


# One trial of the search below allocates this share of the card before training: more than its 0.5 slice, less
# than the card. Only the slice's memory cap can make it fail.
GREEDY_SHARE = 0.75
GREEDY_SEED = 13

SLICES = f"""\
metric: recall@1
params:
  seed: {{type: categorical, choices: [0, 1, {GREEDY_SEED}], target: training.seed}}
fixed: {{training.max_steps: 6, training.batch_size: 8, evaluation.every_steps: 3, data.max_seq_length: 16}}
pruner: {{type: none}}
sampler: {{type: random}}
# the failure is replaced (a search runs --trials trials that do not fail): by the third point, so by a fine one
# (points differ: Optuna skips enqueuing a point equal to one already in the study)
starting_points:
  - {{seed: {GREEDY_SEED}}}
  - {{seed: 0}}
  - {{seed: 1}}
"""


def _take_memory_in_the_greedy_trial():
    """Before a trial trains, in its Ray worker: the trial with GREEDY_SEED allocates GREEDY_SHARE of the card in one
    tensor, inside the trial, under its slice's cap."""
    seed, share = GREEDY_SEED, GREEDY_SHARE

    def before(config):
        if config.training.seed == seed:
            torch.empty(int(share * torch.cuda.get_device_properties(0).total_memory), dtype=torch.uint8, device="cuda")

    return before


@pytest.fixture
def ray_with_greedy_hook():
    with ray_with_hook(before_each_trial(_take_memory_in_the_greedy_trial())):
        yield


def test_two_half_slices_train_on_cuda_and_a_trial_past_its_slice_fails_alone(ray_with_greedy_hook, tmp_path, monkeypatch, tiny_model, toy_data):
    from typer.testing import CliRunner

    from autoembed.cli import app
    from autoembed.study import load_existing

    (tmp_path / "space.yaml").write_text(SLICES)
    url = f"sqlite:///{tmp_path}/slices.db"
    args = [
        "search", "--model", str(tiny_model), "--train", str(toy_data["train"]), "--val", str(toy_data["val"]),
        "--corpus", str(toy_data["corpus"]), "--space", "space.yaml", "--study", "slices", "--storage", url,
        "--trials", "2", "--workers", "2", "--cpus-per-trial", "1", "--gpus-per-trial", "0.5",
    ]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    trials = load_existing("slices", url).get_trials()
    assert [(t.params.get("seed"), t.state.name) for t in trials] == [(GREEDY_SEED, "FAIL"), (0, "COMPLETE"), (1, "COMPLETE")], [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    greedy, fine = trials[0], trials[1]
    # the greedy trial and the first fine one shared the card: each on its half
    assert greedy.datetime_start < fine.datetime_complete and fine.datetime_start < greedy.datetime_complete
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    for trial in trials:
        assert trial.user_attrs["config"]["training"]["device"] == "cuda"
        assert trial.user_attrs["device"].startswith("cuda"), trial.user_attrs
        where = trial.user_attrs["where"]
        assert where["slice"] == 0.5 and where["memory_cap_gib"] == pytest.approx(total_gib / 2, abs=0.01)
    assert fine.user_attrs["steps"] == 6, fine.user_attrs
    reason = greedy.user_attrs["fail_reason"]
    assert reason.startswith("out of memory") and "the trial's slice is 0.5 of the GPU" in reason, reason

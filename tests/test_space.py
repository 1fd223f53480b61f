"""The search space: shipped spaces sample valid configs; every mistake in a space file is named."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import optuna
import pytest

from autoembed.config import DataConfig, TrialConfig, projection_input
from autoembed.errors import AutoembedError
from autoembed.pruners import DEFAULT_HISTORY, BoundedTPESampler
from autoembed.space import SearchSpace

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
SHIPPED = [("default.yaml", 384), ("training.yaml", 384), ("tiny.yaml", 32)]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def base_config() -> TrialConfig:
    return TrialConfig(model="base-model", data=DataConfig(train="train.jsonl"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def check_trial(params: dict, config: TrialConfig, hidden: int) -> None:
    """The invariants every sampled trial keeps."""
    arch = config.architecture
    assert arch.attention_heads is None or hidden % arch.attention_heads == 0
    width = projection_input(arch, hidden)
    assert arch.output_dim is None or arch.output_dim <= width
    loss = config.loss.type
    margins = [n for n in params if n.startswith("margin")]
    temperatures = [n for n in params if n.startswith("temperature")]
    if any(n.startswith("margin_") for n in margins) or margins:
        assert loss in ("contrastive", "triplet")
        assert margins == [f"margin_{loss}"]
        assert config.loss.margin == params[margins[0]]
    for name in temperatures:
        assert loss == "infonce"
        assert config.loss.temperature == params[name]
    if "adapter_depth" in params:
        assert ("adapter_width" in params) == (params["adapter_depth"] > 0)


@pytest.mark.parametrize(("file", "hidden"), SHIPPED)
def test_shipped_space_samples_valid_configs(file, hidden):
    space = SearchSpace.from_yaml_file(SPACES / file)
    study = optuna.create_study(direction="maximize")
    for i in range(20):
        trial = study.ask()
        config = space.sample(trial, base_config(), hidden_size=hidden)
        check_trial(trial.params, config, hidden)
        assert config.evaluation.metric == space.metric
        for key, value in space.fixed.items():
            assert config.get(key) == value
        study.tell(trial, float(i % 7))


@pytest.mark.parametrize(("file", "hidden"), SHIPPED)
@pytest.mark.parametrize("n_workers", [1, 4])
def test_space_sampler_keeps_every_distribution_fixed(file, hidden, n_workers):
    space = SearchSpace.from_yaml_file(SPACES / file)
    study = optuna.create_study(
        direction="maximize", sampler=space.build_sampler(seed=0, n_workers=n_workers), pruner=space.build_pruner()
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(30):
            trial = study.ask()
            config = space.sample(trial, base_config(), hidden_size=hidden)
            check_trial(trial.params, config, hidden)
            study.tell(trial, (i * 37 % 11) / 10)
    assert not [w for w in caught if "distribution" in str(w.message).lower()]
    distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for trial in study.trials:
        for name, dist in trial.distributions.items():
            assert distributions.setdefault(name, dist) == dist, name


def test_conditional_params_get_one_optuna_name_per_branch(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "params:\n"
        "  loss: {type: categorical, choices: [infonce, triplet, contrastive]}\n"
        "  margin: {type: float, low: 0.05, high: 1.0, when: {param: loss, in: [contrastive, triplet]}}\n"
        "  temperature: {type: float, low: 0.01, high: 0.2, log: true, when: {param: loss, in: [infonce]}}\n"
        "  adapter_depth: {type: int, low: 0, high: 2}\n"
        "  adapter_width: {type: categorical, choices: [256, 512], when: {param: adapter_depth, gt: 0}}\n"
    )
    space = SearchSpace.from_yaml_file(path)
    assert space.params["margin"].optuna_names() == ["margin_contrastive", "margin_triplet"]
    assert space.params["temperature"].optuna_names() == ["temperature_infonce"]
    assert space.params["adapter_width"].optuna_names() == ["adapter_width"]
    assert space.conditional
    assert SearchSpace.from_yaml_file(SPACES / "default.yaml").conditional  # the architecture gate


def test_the_readme_space_example_loads_and_samples():
    """The README's example space is what a user copies first: it must load and sample (until session 11 its
    starting point set params the space did not define, and loading it was an error)."""
    import yaml

    readme = (SPACES.parent / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.lstrip().startswith("name:") and "params:" in b]
    assert blocks, "no example space in the README"
    for block in blocks:
        space = SearchSpace.from_dict(yaml.safe_load(block))
        study = optuna.create_study(direction="maximize", sampler=space.build_sampler(seed=0, n_workers=1))
        for params in space.starting_params(hidden_size=384):
            study.enqueue_trial(params)
        for _ in range(3):
            trial = study.ask()
            check_trial(trial.params, space.sample(trial, base_config(), hidden_size=384), 384)
            study.tell(trial, 0.5)


@pytest.mark.parametrize(("file", "hidden"), SHIPPED)
def test_starting_points_run_first_with_their_values(file, hidden):
    space = SearchSpace.from_yaml_file(SPACES / file)
    study = optuna.create_study(direction="maximize", sampler=space.build_sampler(seed=1, n_workers=1))
    starting = space.starting_params(hidden_size=hidden)
    assert starting
    for params in starting:
        study.enqueue_trial(params)
    for params in starting:
        trial = study.ask()
        config = space.sample(trial, base_config(), hidden_size=hidden)
        for name, value in params.items():
            assert trial.params[name] == value
        fixed = space.sample(optuna.trial.FixedTrial(trial.params), base_config(), hidden_size=hidden)
        assert fixed == config
        study.tell(trial, 0.5)


def test_default_starting_points_are_the_expert_pick_its_three_epoch_run_and_its_mined_twin():
    space = SearchSpace.from_yaml_file(SPACES / "default.yaml")
    expert, longer, mined = (
        space.sample(optuna.trial.FixedTrial(p), base_config(), hidden_size=384)
        for p in space.starting_params(hidden_size=384)
    )
    for config in (expert, longer, mined):
        assert (config.loss.type, config.loss.temperature, config.training.warmup_ratio) == ("infonce", 0.05, 0.1)
        arch = config.architecture
        assert (arch.adapter_depth, arch.output_dim, arch.attention_heads, arch.hidden_dropout) == (0, None, None, None)
    t = expert.training
    assert (t.backbone_lr, t.batch_size, t.epochs, expert.data.hard_negatives) == (1e-4, 128, 2.0, 0)
    assert longer.replace(**{"training.epochs": 2.0}) == expert
    assert mined.replace(**{"data.hard_negatives": 0}) == expert and mined.data.mining_max_score_ratio is None


def test_default_space_samples_infonce_only():
    """The margin losses lost on both benchmarks the default space was judged on; a sampled trial is InfoNCE."""
    space = SearchSpace.from_yaml_file(SPACES / "default.yaml")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        config = space.sample(trial, base_config(), hidden_size=384)
        assert config.loss.type == "infonce" and 0.01 <= config.loss.temperature <= 0.2
        study.tell(trial, 0.0)


def test_default_architecture_branches_start_from_the_pretrained_function():
    space = SearchSpace.from_yaml_file(SPACES / "default.yaml")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    branches = {}
    for _ in range(40):
        trial = study.ask()
        config = space.sample(trial, base_config(), hidden_size=384)
        branches.setdefault(trial.params["architecture"], []).append(config.architecture)
        study.tell(trial, 0.0)
    assert set(branches) == {"plain", "adapter", "projection", "backbone"}
    assert all(a.adapter_residual and a.adapter_depth > 0 and a.output_dim is None for a in branches["adapter"])
    assert all(a.projection_init == "pca" and a.output_dim and a.adapter_depth == 0 for a in branches["projection"])
    assert all(a.adapter_depth == 0 and a.output_dim is None and a.attention_heads is None for a in branches["plain"])


SMALL = """\
params:
  adapter_depth: {type: int, low: 0, high: 1}
  adapter_width: {type: categorical, choices: [8, 64], when: {param: adapter_depth, gt: 0}}
  output_dim: {type: categorical, choices: [null, 16, 48]}
  attention_heads: HEADS
"""


@pytest.mark.parametrize(
    ("heads", "hidden", "expected"),
    [
        ("{type: categorical, choices: [null, 4, 5, 6]}", 384, (None, 4, 6)),
        ("{type: categorical, choices: [2, 3, 8]}", 32, (2, 8)),
        ("{type: int, low: 1, high: 16}", 32, (1, 2, 4, 8, 16)),
        ("{type: int, low: 2, high: 12, step: 2}", 384, (2, 4, 6, 8, 12)),
    ],
)
def test_attention_heads_are_limited_to_divisors_of_the_hidden_size(tmp_path, heads, hidden, expected):
    space = SearchSpace.from_yaml_file(write(tmp_path, SMALL.replace("HEADS", heads)))
    dist = space.params["attention_heads"].distribution(hidden_size=hidden)
    assert dist.choices == expected
    study = optuna.create_study()
    for _ in range(10):
        config = space.sample(study.ask(), base_config(), hidden_size=hidden)
        assert config.architecture.attention_heads in expected


@pytest.mark.parametrize(
    ("heads", "hidden", "match"),
    [
        (
            "{type: categorical, choices: [5, 7]}",
            384,
            r"space\.yaml:5: params\.attention_heads\.choices: .*\[5, 7\].*384",
        ),
        ("{type: int, low: 5, high: 7}", 32, r"space\.yaml:5: params\.attention_heads\.low: .*\[5, 7\].*32"),
        ("{type: fixed, value: 5}", 384, r"space\.yaml:5: params\.attention_heads: must divide .*384, got 5"),
    ],
)
def test_attention_heads_that_never_divide_are_an_error(tmp_path, heads, hidden, match):
    space = SearchSpace.from_yaml_file(write(tmp_path, SMALL.replace("HEADS", heads)))
    with pytest.raises(AutoembedError, match=match):
        space.sample(optuna.create_study().ask(), base_config(), hidden_size=hidden)


def test_a_starting_point_the_backbone_cannot_take_is_an_error(tmp_path):
    path = write(
        tmp_path,
        SMALL.replace("HEADS", "{type: categorical, choices: [null, 4, 6]}")
        + "starting_points:\n  - {attention_heads: 6}\n",
    )
    space = SearchSpace.from_yaml_file(path)
    assert space.starting_params(hidden_size=384) == [{"attention_heads": 6}]
    with pytest.raises(
        AutoembedError, match=r"space\.yaml:7: starting_points\[0\]\.attention_heads: 6 .*hidden size 32"
    ):
        space.starting_params(hidden_size=32)


@pytest.mark.parametrize(
    ("params", "output_dim", "clamped"),
    [
        ({"adapter_depth": 1, "adapter_width": 8, "output_dim": 16}, 8, True),
        ({"adapter_depth": 1, "adapter_width": 64, "output_dim": 48}, 48, False),
        ({"adapter_depth": 0, "output_dim": 48}, 32, True),
        ({"adapter_depth": 0, "output_dim": None}, None, False),
    ],
)
def test_output_dim_is_clamped_to_its_input(tmp_path, params, output_dim, clamped):
    space = SearchSpace.from_yaml_file(write(tmp_path, SMALL.replace("HEADS", "{type: categorical, choices: [null]}")))
    trial = optuna.trial.FixedTrial({**params, "attention_heads": None})
    config = space.sample(trial, base_config(), hidden_size=32)
    assert config.architecture.output_dim == output_dim
    assert ("clamped" in trial.user_attrs) == clamped
    if clamped:
        assert trial.user_attrs["clamped"]["architecture.output_dim"] == {
            "sampled": params["output_dim"],
            "effective": output_dim,
        }


def test_params_with_disjoint_branches_may_share_a_target(tmp_path):
    path = write(
        tmp_path,
        P
        + LOSS
        + "  triplet_margin: {type: float, low: 1.0, high: 5.0, target: loss.margin, when: {param: loss, in: [triplet]}}\n"
        "  margin: {type: float, low: 0.1, high: 1.0, when: {param: loss, in: [contrastive]}}\n",
    )
    space = SearchSpace.from_yaml_file(path)
    trial = optuna.trial.FixedTrial({"loss": "triplet", "triplet_margin_triplet": 4.0})
    assert space.sample(trial, base_config(), hidden_size=32).loss.margin == 4.0
    trial = optuna.trial.FixedTrial({"loss": "contrastive", "margin_contrastive": 0.3})
    assert space.sample(trial, base_config(), hidden_size=32).loss.margin == 0.3


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    path = write(
        tmp_path,
        "params:\n  backbone_lr: {type: float, low: 1e-5, high: 2e-4, log: true}\n"
        "  head_lr: {type: categorical, choices: [1e-4, 1e-3]}\nstarting_points:\n  - {backbone_lr: 5e-5}\n",
    )
    space = SearchSpace.from_yaml_file(path)
    assert (space.params["backbone_lr"].low, space.params["head_lr"].choices) == (1e-5, (1e-4, 1e-3))
    assert space.starting_params(hidden_size=32) == [{"backbone_lr": 5e-5}]


def test_possible_lists_fixed_values_and_choices_and_largest_also_reads_ranges(tmp_path):
    space = SearchSpace.from_yaml_file(write(tmp_path, (
        "params:\n  max_steps: {type: int, low: 10, high: 40}\n  batch_size: {type: categorical, choices: [8, 16]}\n"
        "fixed:\n  data.hard_negatives: 2\n"
    )))
    assert space.possible("training.max_steps") == [] and space.largest("training.max_steps") == 40
    assert space.possible("training.batch_size") == [8, 16] and space.largest("training.batch_size") == 16
    assert space.possible("data.hard_negatives") == [2] and space.largest("data.hard_negatives") == 2
    assert space.possible("training.epochs") == [] and space.largest("training.epochs") is None


def test_describe_is_json():
    for file, _ in SHIPPED:
        summary = SearchSpace.from_yaml_file(SPACES / file).describe()
        assert json.loads(json.dumps(summary)) == summary


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "median"},
        {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 4, "interval_steps": 2, "n_min_trials": 1},
        {"type": "percentile", "percentile": 25.0},
        {"type": "successive_halving", "min_resource": 1, "reduction_factor": 3},
        {"type": "successive_halving", "min_resource": "auto"},
        {"type": "hyperband", "min_resource": 1, "max_resource": 10, "reduction_factor": 3},
        {"type": "threshold", "lower": 0.1},
        {"type": "patient", "patience": 2, "wrapped": {"type": "median"}},
        {"type": "patient", "patience": 1, "min_delta": 0.01},
        {"type": "wilcoxon", "p_threshold": 0.05},
        {"type": "none"},
    ],
)
def test_each_pruner_builds_and_prunes(spec):
    space = SearchSpace.from_dict({"pruner": spec})
    pruner = space.build_pruner()
    assert isinstance(pruner, optuna.pruners.BasePruner)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for value in (0.9, 0.1):
        trial = study.ask()
        for step in range(4):
            trial.report(value, step)
            trial.should_prune()
        study.tell(trial, value)


@pytest.mark.parametrize(
    ("spec", "n_workers", "expected"),
    [
        ({}, 1, (BoundedTPESampler, False)),
        ({}, 3, (BoundedTPESampler, True)),
        ({"sampler": {"type": "tpe", "n_startup_trials": 3}}, 1, (BoundedTPESampler, False)),
        ({"sampler": {"type": "random"}}, 4, (optuna.samplers.RandomSampler, None)),
    ],
)
def test_build_sampler(spec, n_workers, expected):
    sampler = SearchSpace.from_dict(spec).build_sampler(seed=0, n_workers=n_workers)
    cls, liar = expected
    assert type(sampler) is cls
    if liar is not None:
        assert isinstance(sampler, optuna.samplers.TPESampler)
        assert sampler._constant_liar is liar and sampler._multivariate is True
        assert sampler.max_history == DEFAULT_HISTORY


def test_conditional_space_uses_grouped_tpe():
    sampler = SearchSpace.from_yaml_file(SPACES / "default.yaml").build_sampler(seed=0, n_workers=1)
    assert sampler._group is True
    assert SearchSpace.from_yaml_file(SPACES / "training.yaml").build_sampler(seed=0, n_workers=1)._group is False


P = "params:\n"
LOSS = "  loss: {type: categorical, choices: [infonce, triplet, contrastive]}\n"


# (YAML, line, key, what the message must also say: the rule and the bad value)
ERRORS = [
    ("nme: x\n", 1, "nme", "unknown key 'nme' in a search space"),
    (P + "  batch_size: {type: categorical, choices: [16], lo: 1}\n", 2, "params.batch_size.lo", "unknown key 'lo'"),
    (
        P + "  batch_size: {type: categorical, choices: [16], low: 1}\n",
        2,
        "params.batch_size.low",
        "unknown key 'low' in a categorical param",
    ),
    (
        P + "  backbone_lr:\n    type: float\n    low: 1.0e-3\n    high: 1.0e-5\n",
        4,
        "params.backbone_lr.low",
        "must be <= high (1e-05), got low=0.001",
    ),
    (
        P + "  adapter_depth: {type: int, low: 0.5, high: 2}\n",
        2,
        "params.adapter_depth.low",
        "must be an int, got float 0.5",
    ),
    (
        P + "  batch_size: {type: categorical, choices: 16}\n",
        2,
        "params.batch_size.choices",
        "must be a list, got int 16",
    ),
    (
        P + "  batch_size: {type: categorical, choices: []}\n",
        2,
        "params.batch_size.choices",
        "must not be empty, got []",
    ),
    (
        P + "  weight_decay: {type: float, low: 0.0, high: 0.1, log: true}\n",
        2,
        "params.weight_decay.low",
        "must be > 0 with log: true, got 0.0",
    ),
    (
        P + "  weight_decay: {type: float, low: 0.01, high: 0.1, log: true, step: 0.01}\n",
        2,
        "params.weight_decay.step",
        "cannot be combined with log",
    ),
    (
        P + "  weight_decay: {type: uniform, low: 0.0, high: 0.1}\n",
        2,
        "params.weight_decay.type",
        "unknown type 'uniform'",
    ),
    (P + "  weight_decay: {low: 0.0, high: 0.1}\n", 2, "params.weight_decay", "is missing 'type'"),
    (
        P + "  batch_size: {type: categorical, choices: [16], target: training.batchsize}\n",
        2,
        "params.batch_size.target",
        "'training.batchsize' is not a config key (did you mean 'training.batch_size'?)",
    ),
    (
        P + "  x: {type: int, low: 1, high: 2, target: model}\n",
        2,
        "params.x.type",
        "the base model is searched as a categorical",
    ),
    (P + "  foo: {type: int, low: 1, high: 2}\n", 2, "params.foo", "has no default target"),
    (
        P + "  batch_size: {type: categorical, choices: [1, 16]}\n",
        2,
        "params.batch_size.choices",
        "1 is not a valid training.batch_size: must be an int in the range [2, 65536], got 1",
    ),
    (
        P + "  warmup_ratio: {type: float, low: 0.0, high: 1.5}\n",
        2,
        "params.warmup_ratio.high",
        "1.5 is not a valid training.warmup_ratio: must be a float in the range [0.0, 1.0], got 1.5",
    ),
    (
        P + "  loss: {type: categorical, choices: [infonce, cosent]}\n",
        2,
        "params.loss.choices",
        "'cosent' is not a valid loss.type",
    ),
    (P + "  loss: {type: fixed, value: cosent}\n", 2, "params.loss.value", "'cosent' is not a valid loss.type"),
    (P + "  loss: {type: fixed}\n", 2, "params.loss", "a fixed param needs 'value'"),
    (
        P + LOSS + "  margin: {type: float, low: 0.1, high: 1.0, when: {param: losss, in: [triplet]}}\n",
        3,
        "params.margin.when.param",
        "names 'losss', which is not a param declared above",
    ),
    (
        P + "  margin: {type: float, low: 0.1, high: 1.0, when: {param: loss, in: [triplet]}}\n" + LOSS,
        2,
        "params.margin.when.param",
        "names 'loss', which is not a param declared above",
    ),
    (
        P + LOSS + "  margin: {type: float, low: 0.1, high: 1.0, when: {param: loss, in: [triplett]}}\n",
        3,
        "params.margin.when.in",
        "'triplett' is not a value 'loss' can take",
    ),
    (
        P + LOSS + "  margin: {type: float, low: 0.1, high: 1.0, when: {param: loss, eq: triplet}}\n",
        3,
        "params.margin.when.eq",
        "unknown key 'eq' in a condition",
    ),
    (
        P + LOSS + "  margin: {type: float, low: 0.1, high: 1.0, when: {param: loss}}\n",
        3,
        "params.margin.when",
        "needs exactly one of in, gt, ge, lt, le",
    ),
    (
        P
        + "  batch_size: {type: categorical, choices: [16]}\n  bs: {type: int, low: 2, high: 8, target: training.batch_size}\n",
        3,
        "params.bs",
        "sets training.batch_size, like param 'batch_size'",
    ),
    (
        P + "  batch_size: {type: categorical, choices: [16]}\nfixed:\n  training.batch_size: 8\n",
        2,
        "params.batch_size",
        "'fixed' also sets",
    ),
    (
        P + LOSS + "  margin_triplet: {type: float, low: 0.1, high: 0.5, target: loss.label_smoothing}\n"
        "  margin: {type: float, low: 0.1, high: 1.0, when: {param: loss, in: [contrastive, triplet]}}\n",
        4,
        "params.margin",
        "its Optuna name 'margin_triplet' clashes with param 'margin_triplet'",
    ),
    (
        P
        + LOSS
        + "  m1: {type: float, low: 0.1, high: 1.0, target: loss.margin, when: {param: loss, in: [triplet, contrastive]}}\n"
        "  m2: {type: float, low: 0.1, high: 1.0, target: loss.margin, when: {param: loss, in: [contrastive]}}\n",
        4,
        "params.m2",
        "sets loss.margin, like param 'm1'",
    ),
    (
        "fixed:\n  training.batch_size: 1\n",
        2,
        "fixed.training.batch_size",
        "must be an int in the range [2, 65536], got 1",
    ),
    ("fixed:\n  training.max_steps: 0\n", 2, "fixed.training.max_steps", "got 0"),
    ("fixed:\n  training.batchsize: 8\n", 2, "fixed.training.batchsize", "'training.batchsize' is not a config key"),
    ("fixed: [1, 2]\n", 1, "fixed", "must be a mapping, got list"),
    ("metric: recall@5\n", 1, "metric", "must be recall@K with K in k=[1, 10], or mrr@10 / ndcg@10, got 'recall@5'"),
    ("pruner: {type: asha}\n", 1, "pruner.type", "unknown pruner 'asha'; expected one of: median"),
    ("pruner: {type: median, n_startup: 3}\n", 1, "pruner.n_startup", "unknown key 'n_startup' in a median pruner"),
    ("pruner: {type: median, n_startup_trials: 2.5}\n", 1, "pruner.n_startup_trials", "must be int, got float 2.5"),
    (
        "pruner:\n  type: successive_halving\n  reduction_factor: 1\n",
        3,
        "pruner.reduction_factor",
        "Optuna rejects this successive_halving pruner: The value of `reduction_factor` is 1",
    ),
    ("pruner: {type: percentile, percentile: 150}\n", 1, "pruner.percentile", "Percentile must be between 0 and 100"),
    ("pruner: {type: percentile}\n", 1, "pruner.percentile", "a percentile pruner needs 'percentile'"),
    ("pruner: {type: wilcoxon, p_threshold: high}\n", 1, "pruner.p_threshold", "must be float, got str 'high'"),
    (
        "pruner:\n  type: patient\n  patience: 2\n  wrapped: {type: nope}\n",
        4,
        "pruner.wrapped.type",
        "unknown pruner 'nope'",
    ),
    ("pruner:\n  type: patient\n  patience: -1\n", 3, "pruner.patience", "patience cannot be negative but got -1"),
    ("sampler: {type: tpe, seed: 1}\n", 1, "sampler.seed", "unknown key 'seed' in a tpe sampler"),
    ("sampler: {type: cmaes}\n", 1, "sampler.type", "unknown sampler 'cmaes'"),
    ("sampler: {type: tpe, n_startup_trials: -1}\n", 1, "sampler.n_startup_trials", "must be an int >= 0, got -1"),
    (P + LOSS + "starting_points:\n  - {los: infonce}\n", 4, "starting_points[0].los", "unknown param 'los'"),
    (
        P + LOSS + "starting_points:\n  - {loss: cosent}\n",
        4,
        "starting_points[0].loss",
        "'cosent' is outside the param's distribution",
    ),
    (
        P + "  warmup_ratio: {type: float, low: 0.0, high: 0.2}\nstarting_points:\n  - {warmup_ratio: 0.5}\n",
        4,
        "starting_points[0].warmup_ratio",
        "0.5 is outside",
    ),
    (
        P
        + LOSS
        + "  margin: {type: float, low: 0.1, high: 1.0, when: {param: loss, in: [triplet]}}\nstarting_points:\n  - {loss: infonce, margin: 0.5}\n",
        5,
        "starting_points[0].margin",
        "is only sampled when loss is in ['triplet'], but this starting point has loss='infonce'",
    ),
    (
        P
        + LOSS
        + "  margin: {type: float, low: 0.1, high: 1.0, when: {param: loss, in: [triplet]}}\nstarting_points:\n  - {margin: 0.5}\n",
        5,
        "starting_points[0].margin",
        "'margin' depends on 'loss'; set 'loss' in this starting point too",
    ),
    (P + LOSS + "starting_points: {loss: infonce}\n", 3, "starting_points", "must be a list of mappings, got Located"),
    # YAML keeps the last of two equal keys; the file is refused instead, at the second one
    (P + LOSS + LOSS, 3, "params.loss", "duplicate key 'loss' (first on line 2)"),
    (
        P + LOSS + "starting_points:\n  - {loss: infonce,\n     loss: triplet}\n",
        5,
        "starting_points[0].loss",
        "duplicate key 'loss' (first on line 4)",
    ),
    # messages pydantic's checks produce, in the same shape as the rest
    (P + "  batch_size: {type: categorical, choices: [16, {a: 1}]}\n", 2, "params.batch_size.choices[1]", "each choice"),
    (P + "  weight_decay: {type: float, low: 0.0, high: true}\n", 2, "params.weight_decay.high", "must be a number, got bool True"),
    (P + "  weight_decay: {type: float, low: 0.0, high: .inf}\n", 2, "params.weight_decay.high", "must be a finite number"),
    (P + "  weight_decay: {type: float, low: 0.0, high: 0.1, log: 1}\n", 2, "params.weight_decay.log", "must be true or false, got int 1"),
    (P + "  weight_decay: {type: float, low: 0.0, high: 0.1, step: -0.1}\n", 2, "params.weight_decay.step", "must be > 0, got -0.1"),
    (P + "  weight_decay: {type: float, low: 0.0, high: 0.1, step: 0.03}\n", 2, "params.weight_decay.step", "must be a multiple of step"),
    (P + "  weight_decay: {type: float, high: 0.1}\n", 2, "params.weight_decay", "a float param needs 'low'"),
    (P + "  batch_size: {type: categorical, choices: [8, 8]}\n", 2, "params.batch_size.choices", "8 is listed twice"),
    (P + "  bad name: {type: int, low: 1, high: 2, target: training.epochs}\n", 2, "params.bad name", "a param name must be"),
    (P + LOSS + "  margin: {type: float, low: 0.1, high: 1.0, when: {param: loss, in: []}}\n", 3, "params.margin.when.in", "must not be empty"),
    ("params:\n  batch_size: 16\n", 2, "params.batch_size", "must be a mapping, got int 16"),
    ("sampler: {n_startup_trials: 3}\n", 1, "sampler", "is missing 'type'; expected one of: tpe, random"),
    ("name: [a]\n", 1, "name", "must be a string, got list ['a']"),
    ("pruner: {type: hyperband, max_resource: 2.5}\n", 1, "pruner.max_resource", "must be int or str, got float 2.5"),
]


@pytest.mark.parametrize(("text", "line", "key", "says"), ERRORS, ids=[e[2] + ":" + e[3][:30] for e in ERRORS])
def test_space_errors_name_file_line_key_rule_and_value(tmp_path, text, line, key, says):
    path = write(tmp_path, text)
    with pytest.raises(AutoembedError, match=re.escape(f"{path}:{line}: {key}: ") + ".*" + re.escape(says)) as info:
        SearchSpace.from_yaml_file(path)
    assert (info.value.file, info.value.line, info.value.key) == (str(path), line, key)


def test_a_gate_sets_no_config_key_and_must_be_categorical(tmp_path):
    space = SearchSpace.from_yaml_file(write(tmp_path, (
        "params:\n  arch: {type: categorical, choices: [plain, adapter], target: null}\n"
        "  adapter_depth: {type: int, low: 1, high: 2, when: {param: arch, in: [adapter]}}\n"
    )))
    plain = space.sample(optuna.trial.FixedTrial({"arch": "plain"}), base_config(), hidden_size=32)
    assert plain.to_dict() == base_config().replace(**{"evaluation.metric": "recall@10"}).to_dict()
    adapted = space.sample(optuna.trial.FixedTrial({"arch": "adapter", "adapter_depth_adapter": 2}), base_config(), hidden_size=32)
    assert adapted.architecture.adapter_depth == 2
    with pytest.raises(AutoembedError, match=r"params\.arch\.target.*must be categorical"):
        SearchSpace.from_yaml_file(write(tmp_path, "params:\n  arch: {type: float, low: 0, high: 1, target: null}\n"))

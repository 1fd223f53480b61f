"""The base model as a search axis: the space's ``model`` param, the untrained screen, and trials on each model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import build_tiny_bert
from optuna.trial import TrialState

from autoembed.errors import AutoembedError
from autoembed.provenance import model_provenance
from autoembed.recipe import export_recipe
from autoembed.search import SearchOptions, run_search
from autoembed.space import SearchSpace
from autoembed.study import load_existing

SPACE = """\
metric: recall@1
params:
  model: {{type: categorical, choices: [{a}, {b}, {c}]}}
  temperature: {{type: float, low: 0.03, high: 0.1}}
fixed: {{training.max_steps: 2, training.batch_size: 8, data.max_seq_length: 16}}
screen: {{keep: 2, margin: 1.0}}
pruner: {{type: none}}
sampler: {{type: random}}
starting_points:
  - {{temperature: 0.05}}
  - {{model: {c}, temperature: 0.05}}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model) -> list[str]:
    """Three tiny BERTs: the shared one, a wider one (hidden 48) and another seed, so their untrained values differ."""
    root = tmp_path_factory.mktemp("models")
    return [str(tiny_model), str(build_tiny_bert(root / "wide", hidden=48, seed=1)), str(build_tiny_bert(root / "other", seed=2))]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, models, toy_data):
    root = tmp_path_factory.mktemp("screen")
    a, b, c = models
    (root / "space.yaml").write_text(SPACE.format(a=a, b=b, c=c))
    opts = SearchOptions(
        study="screen", model=a, train=str(toy_data["train"]), val=str(toy_data["val"]), corpus=str(toy_data["corpus"]),
        space=str(root / "space.yaml"), storage=f"sqlite:///{root}/s.db", cpus_per_trial=1, trials=5, executor="inline",
    )  # fmt: skip
    result = run_search(opts)
    return opts, result, root


def test_the_screen_keeps_the_best_untrained_models_and_every_trial_uses_one(searched, models):
    opts, result, _ = searched
    study = load_existing("screen", opts.storage)
    screen = study.user_attrs["plan"]["screen"]
    scores = screen["scores"]
    assert set(scores) == set(models) and all(0.0 <= v <= 1.0 for v in scores.values())
    assert len(set(scores.values())) > 1  # the untrained models do differ on this sample
    # keep 2 within a margin of 1.0 (every one): the best two, best first
    assert screen["kept"] == sorted(models, key=lambda m: -scores[m])[:2]
    trials = study.get_trials()
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    used = {t.user_attrs["config"]["model"] for t in trials}
    assert used <= set(screen["kept"])
    assert {t.params["model"] for t in trials} == used  # the model is a param TPE sees
    # a starting point naming no model takes the screen's best; one naming a dropped model is left out
    assert trials[0].params["model"] == screen["kept"][0]
    enqueued = [t for t in trials if "fixed_params" in t.system_attrs]
    assert len(enqueued) == (2 if models[2] in screen["kept"] else 1)
    # each trial's embedding dimension is its own model's hidden size (the wide one is 48)
    for t in trials:
        assert t.user_attrs["embedding_dim"] == (48 if t.user_attrs["config"]["model"] == models[1] else 32)
    assert study.user_attrs["provenance"]["models"] == {m: model_provenance(m) for m in screen["kept"]}


def test_a_recipe_carries_its_trials_own_base_model(searched, tmp_path):
    opts, _, _ = searched
    study = load_existing("screen", opts.storage)
    trial = next(t for t in study.get_trials() if t.state == TrialState.COMPLETE)
    out = export_recipe("screen", opts.storage, tmp_path / "r.yaml", trial_number=trial.number)
    recipe = yaml.safe_load(Path(out["recipe"]).read_text())
    model = trial.user_attrs["config"]["model"]
    assert recipe["model"] == model
    assert recipe["provenance"]["base_model"] == model_provenance(model)


def test_a_resumed_study_searches_the_models_its_screen_kept(searched):
    opts, _, _ = searched
    study = load_existing("screen", opts.storage)
    kept = study.user_attrs["plan"]["screen"]["kept"]
    again = run_search(SearchOptions(**{**opts.__dict__, "trials": 7}))
    assert again.counts["COMPLETE"] == 7
    trials = load_existing("screen", opts.storage).get_trials()
    assert {t.user_attrs["config"]["model"] for t in trials} <= set(kept)
    assert load_existing("screen", opts.storage).user_attrs["plan"]["screen"]["kept"] == kept  # not screened again


@pytest.mark.parametrize(
    ("spec", "at", "says"),
    [
        ({"params": {"model": {"type": "fixed", "value": "m"}}}, "params.model.type", "categorical of model folders"),
        ({"params": {"model": {"type": "categorical", "choices": ["m", 3]}}}, "params.model.choices", "got 3"),
        ({"params": {"x": {"type": "categorical", "choices": ["a"], "target": None}, "model": {"type": "categorical", "choices": ["m"], "when": {"param": "x", "in": ["a"]}}}}, "params.model.when", "cannot have 'when'"),
        ({"fixed": {"model": "m"}}, "fixed.model", "cannot be fixed here"),
        ({"screen": {"keep": 0}}, "screen.keep", ">= 1"),
        ({"screen": {"margin": -0.1}}, "screen.margin", ">= 0"),
    ],
)
def test_a_bad_model_param_or_screen_is_one_error_at_its_key(spec, at, says):
    with pytest.raises(AutoembedError) as exc:
        SearchSpace.from_dict(spec)
    assert exc.value.key == at and says in exc.value.message


def test_a_missing_candidate_model_fails_before_the_study_exists(tmp_path, tiny_model, toy_data):
    missing = tmp_path / "no-such-model"
    space = f"params:\n  model: {{type: categorical, choices: [{tiny_model}, {missing}]}}\nfixed: {{training.max_steps: 2}}\n"
    (tmp_path / "space.yaml").write_text(space)
    opts = SearchOptions(
        study="missing", model=str(tiny_model), train=str(toy_data["train"]), val=str(toy_data["val"]), corpus=str(toy_data["corpus"]),
        space=str(tmp_path / "space.yaml"), storage=f"sqlite:///{tmp_path}/s.db", cpus_per_trial=1, trials=1, executor="inline",
    )  # fmt: skip
    with pytest.raises(AutoembedError, match="no-such-model"):
        run_search(opts)
    assert not (tmp_path / "s.db").exists()

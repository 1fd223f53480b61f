"""training.merge_base (WiSE-FT): weights interpolated between the step-0 model and the fine-tuned one."""

from __future__ import annotations

import pytest
import torch

from autoembed.config import TrialConfig
from autoembed.errors import AutoembedError
from autoembed.evaluation import TokenCache, encode
from autoembed.model import build_model
from autoembed.recipe import export_recipe
from autoembed.search import SearchOptions, run_search
from autoembed.training import MERGE_GRID, prepare, train
from tests.test_training import toy_config, weights

TEXTS = ["acute fever with cough", "left knee fracture", "chronic kidney liver disease"]


def _embed(model):
    cache = TokenCache.build(model.tokenizer, TEXTS, 32)
    return encode(model, cache, [cache.index[t] for t in TEXTS])


def test_alpha_0_is_the_base_model_and_1_the_fine_tuned_one(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data)
    prepared = prepare(config)
    tuned = train(config, prepared=prepared)
    assert tuned.merge_alpha is None
    one = train(config.replace(**{"training.merge_base": 1.0}), prepared=prepared)
    assert one.merge_alpha == 1.0 and one.value == tuned.value
    a, b = weights(tuned.model), weights(one.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    zero = train(config.replace(**{"training.merge_base": 0.0}), prepared=prepared)
    base = _embed(build_model(config))
    assert torch.equal(_embed(zero.model), base) and not torch.allclose(_embed(tuned.model), base)
    half = train(config.replace(**{"training.merge_base": 0.5}), prepared=prepared)
    w0, w1, wh = weights(zero.model), weights(tuned.model), weights(half.model)
    key = next(k for k in w1 if w1[k].is_floating_point() and not torch.equal(w0[k], w1[k]))
    assert torch.allclose(wh[key], (w0[key] + w1[key]) / 2, atol=1e-6)


def test_auto_picks_the_best_alpha_of_the_grid_on_validation(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data, **{"training.merge_base": "auto"})
    result = train(config)
    assert set(result.merge_scores) == {f"{a:g}" for a in MERGE_GRID}
    best = max(result.merge_scores.values())
    assert result.value == best == result.merge_scores[f"{result.merge_alpha:g}"]
    # the picked alpha, fixed, rebuilds the same model
    again = train(config.replace(**{"training.merge_base": result.merge_alpha}))
    a, b = weights(result.model), weights(again.model)
    assert all(torch.equal(a[k], b[k]) for k in a) and again.value == result.value


@pytest.mark.parametrize("value", [1.5, -0.1, "often", True])
def test_bad_merge_base_is_named(tiny_model, toy_data, value):
    data = toy_config(tiny_model, toy_data).to_dict()
    data["training"]["merge_base"] = value
    with pytest.raises(AutoembedError, match=r"training\.merge_base: must be a float in the range \[0.0, 1.0\], 'auto' or null"):
        TrialConfig.from_dict(data)


def test_a_searched_trial_records_its_alpha_and_the_recipe_fixes_it(tiny_model, toy_data, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "metric: mrr@10\nparams:\n  batch_size: {type: categorical, choices: [8]}\n"
        "fixed: {training.max_steps: 3, training.merge_base: auto, data.max_seq_length: 16, training.device: cpu}\n"
        "pruner: {type: none}\nsampler: {type: random}\n"
    )
    options = SearchOptions(
        study="w", model=str(tiny_model), train=str(toy_data["train"]), val=str(toy_data["val"]), corpus=str(toy_data["corpus"]),
        space=str(space), trials=1, storage=f"sqlite:///{tmp_path}/w.db", executor="inline", cpus_per_trial=1, seed=1,
    )
    result = run_search(options)
    assert result.counts["COMPLETE"] == 1
    export_recipe("w", options.storage_url, tmp_path / "recipe.yaml")
    recipe = TrialConfig.from_yaml_file(tmp_path / "recipe.yaml")
    assert recipe.training.merge_base in MERGE_GRID
    rebuilt = train(recipe)
    assert rebuilt.merge_alpha == recipe.training.merge_base and rebuilt.value == pytest.approx(result.best_value, abs=0)

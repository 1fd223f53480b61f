"""Search -> export -> train from the recipe reproduces the trial's recorded value; data and secrets guarded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from autoembed.config import TrialConfig
from autoembed.errors import AutoembedError
from autoembed.recipe import export_recipe, train_recipe
from autoembed.search import SearchOptions, run_search

SPACE = """
name: recipe-test
metric: mrr@10
params:
  loss: {type: categorical, choices: [infonce, triplet]}
  temperature: {type: float, low: 0.03, high: 0.1, when: {param: loss, in: [infonce]}}
  margin: {type: float, low: 0.2, high: 0.6, when: {param: loss, in: [triplet]}}
  output_dim: {type: categorical, choices: [null, 16]}
  backbone_lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
  hard_negatives: {type: categorical, choices: [0, 1]}
fixed:
  training.max_steps: 6
  training.batch_size: 8
  evaluation.every_steps: 3
  data.max_seq_length: 16
pruner: {type: none}
sampler: {type: random}
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_model, toy_data):
    root = tmp_path_factory.mktemp("recipe")
    space = root / "space.yaml"
    space.write_text(SPACE)
    url = f"sqlite:///{root}/s.db"
    options = SearchOptions(
        study="r", model=str(tiny_model), train=str(toy_data["train"]), val=str(toy_data["val"]), corpus=str(toy_data["corpus"]),
        space=str(space), trials=3, storage=url, executor="inline", cpus_per_trial=1, seed=3,
    )
    run_search(options)
    return root, url


def test_export_then_train_reproduces_the_trial_value(searched):
    root, url = searched
    recipe = root / "recipe.yaml"
    summary = export_recipe("r", url, recipe)
    study = optuna.load_study(study_name="r", storage=url)
    best = study.best_trial
    assert summary["trial"] == best.number and summary["value"] == best.value
    data = yaml.safe_load(recipe.read_text())
    prov = data["provenance"]
    assert prov["objective"] == {"name": "mrr@10", "value": best.value, "step": 6, "pairs": best.user_attrs["value_pairs"]}
    assert best.user_attrs["value_pairs"] == 6 * data["training"]["batch_size"]
    assert prov["study"] == {"name": "r", "trial": best.number, "storage": url}
    assert set(prov["data"]) == {"train", "val", "corpus"} and len(prov["data"]["train"]["sha256"]) == 64
    assert prov["data"]["train"]["rows"] > 0 and prov["base_model"]["sha256"]
    assert {"autoembed", "torch", "transformers", "optuna", "ray"} <= set(prov["versions"])
    assert data["training"]["max_steps"] == 6 and data["training"]["threads"] == 1

    out = root / "model"
    metrics = train_recipe(recipe, out)
    on_disk = json.loads((out / "metrics.json").read_text())
    # exactly the trial's recorded value: same seed, same threads, same steps, same validation sample
    assert on_disk["mrr@10"] == best.value
    assert on_disk == {k: v for k, v in metrics.items() if k != "output"}
    assert best.user_attrs["final_metrics"] == {k: on_disk[k] for k in ("recall@1", "recall@10", "mrr@10", "ndcg@10")}
    card = (out / "README.md").read_text()
    assert "autoembed train" in card and f"{best.value}" in card

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out), device="cpu")
    assert model.encode(["acute fever"]).shape[1] == (16 if best.params["output_dim"] == 16 else 32)


def test_a_trial_with_mined_negatives_reproduces_from_its_recipe(searched, tmp_path):
    root, url = searched
    study = optuna.load_study(study_name="r", storage=url)
    mined = [t for t in study.trials if t.params.get("hard_negatives") == 1]
    assert mined, "the seeded search should sample hard_negatives 1 at least once"
    trial = mined[0]
    recipe = tmp_path / "mined.yaml"
    export_recipe("r", url, recipe, trial_number=trial.number)
    assert yaml.safe_load(recipe.read_text())["data"]["hard_negatives"] == 1
    metrics = train_recipe(recipe, tmp_path / "model")
    # training from the recipe mines the same negatives again: the same value, to the bit
    assert metrics["mrr@10"] == trial.value


def test_export_a_named_trial_and_refuse_a_missing_one(searched):
    root, url = searched
    summary = export_recipe("r", url, root / "t0.yaml", trial_number=0)
    assert summary["trial"] == 0
    with pytest.raises(AutoembedError, match="no trial 99"):
        export_recipe("r", url, root / "t99.yaml", trial_number=99)
    assert not (root / "t99.yaml").exists()


def test_tampered_data_is_refused_unless_allowed(searched, tmp_path):
    root, url = searched
    recipe = tmp_path / "recipe.yaml"
    export_recipe("r", url, recipe)
    data = yaml.safe_load(recipe.read_text())
    copy = tmp_path / "train.jsonl"
    copy.write_text(open(data["data"]["train"]).read())
    data["data"]["train"] = str(copy)
    data["provenance"]["data"]["train"]["path"] = str(copy)
    recipe.write_text(yaml.safe_dump(data))
    with copy.open("a") as fh:
        fh.write(json.dumps({"query": "acute cough", "positive": "lung infection"}) + "\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "autoembed.cli", "train", str(recipe), "-o", str(tmp_path / "m")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "train file" in proc.stderr and "changed" in proc.stderr and "--allow-changed-data" in proc.stderr
    assert not (tmp_path / "m").exists()
    metrics = train_recipe(recipe, tmp_path / "m2", allow_changed_data=True)
    assert metrics["data_changes"] and (tmp_path / "m2" / "metrics.json").is_file()


def test_seeds_report_mean_and_spread_next_to_the_study_value(searched, tmp_path):
    root, url = searched
    recipe = tmp_path / "recipe.yaml"
    export_recipe("r", url, recipe)
    metrics = train_recipe(recipe, tmp_path / "m", seeds=2)
    seeds = metrics["seeds"]
    assert seeds["n"] == 2 and len(seeds["values"]) == 2
    assert seeds["mean"] == pytest.approx(sum(seeds["values"]) / 2)
    assert metrics["study_value"] == TrialConfig.from_yaml_file(recipe).provenance["objective"]["value"]
    assert seeds["values"][0] == metrics["study_value"]  # the saved folder is the recipe's own seed


def test_export_model_hands_over_the_searched_model_that_the_recipe_rebuilds(searched, tmp_path):
    """The search kept the best trial's model (--keep-models 1); `export --model` copies it, and it is the model
    `autoembed train` rebuilds from the recipe, weight for weight."""
    root, url = searched
    study = optuna.load_study(study_name="r", storage=url)
    best = study.best_trial
    assert [p.name for p in (root / "r" / "models").iterdir()] == [f"trial-{best.number}"]  # the others were dropped
    recipe, exported = tmp_path / "recipe.yaml", tmp_path / "exported"
    summary = export_recipe("r", url, recipe, model_output=exported)
    assert summary["model"] == str(exported) and summary["trial"] == best.number
    record = json.loads((exported / "metrics.json").read_text())
    assert record["value"] == best.value == record["study_value"] and record["kept_by_search"] == {"study": "r", "trial": best.number}
    assert record["step"] == best.user_attrs["value_step"]
    assert TrialConfig.from_yaml_file(exported / "autoembed_config.yaml").to_dict() == TrialConfig.from_yaml_file(recipe).to_dict()
    assert "autoembed train" in (exported / "README.md").read_text() and not (exported / "trial.json").exists()

    rebuilt = tmp_path / "rebuilt"
    train_recipe(recipe, rebuilt)
    from safetensors.torch import load_file

    weights = sorted(p.relative_to(exported) for p in exported.rglob("*.safetensors"))  # the backbone, and any head
    assert Path("model.safetensors") in weights
    assert weights == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*.safetensors"))
    for rel in weights:
        a, b = load_file(exported / rel), load_file(rebuilt / rel)
        assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a), rel


def test_export_model_refuses_a_trial_whose_model_was_not_kept(searched, tmp_path):
    root, url = searched
    study = optuna.load_study(study_name="r", storage=url)
    other = next(t for t in study.trials if t.number != study.best_trial.number and t.state.name == "COMPLETE")
    recipe, target = tmp_path / "recipe.yaml", tmp_path / "model"
    with pytest.raises(AutoembedError, match=rf"trial {other.number}'s model is not kept: .* gone .*autoembed train"):
        export_recipe("r", url, recipe, trial_number=other.number, model_output=target)
    assert not recipe.exists() and not target.exists()  # nothing half-written: no recipe without its model
    # a folder left by an earlier study of the same name is not this trial's model
    best = study.best_trial
    marker = Path(best.user_attrs["model"]["path"]) / "trial.json"
    saved = marker.read_text()
    try:
        marker.write_text(json.dumps({"token": "another study's"}))
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(
            [sys.executable, "-m", "autoembed.cli", "export", "r", "--storage", url, "-o", str(recipe), "--model", str(target)],
            capture_output=True, text=True, env=env,
        )
    finally:
        marker.write_text(saved)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "holds another trial's model" in proc.stderr
    assert not recipe.exists() and not target.exists()


def test_keep_models_keeps_the_best_n_or_none(tmp_path, tiny_model, toy_data):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)

    def search(name: str, keep: int) -> optuna.Study:
        options = SearchOptions(
            study=name, model=str(tiny_model), train=str(toy_data["train"]), val=str(toy_data["val"]), corpus=str(toy_data["corpus"]),
            space=str(space), trials=3, storage=f"sqlite:///{tmp_path}/{name}.db", executor="inline", cpus_per_trial=1, seed=3, keep_models=keep,
        )
        result = run_search(options)
        study = optuna.load_study(study_name=name, storage=options.storage)
        assert result.best_model == (study.best_trial.user_attrs["model"]["path"] if keep else None)
        return study

    study = search("two", 2)
    ranked = sorted(study.trials, key=lambda t: (-t.value, t.number))
    assert sorted(p.name for p in (tmp_path / "two" / "models").iterdir()) == sorted(f"trial-{t.number}" for t in ranked[:2])
    search("none", 0)
    assert not (tmp_path / "none").exists()
    with pytest.raises(AutoembedError, match="keep_models.*>= 0"):
        SearchOptions(study="x", model="m", train="t", keep_models=-1).check()


def test_password_is_masked_in_the_recipe():
    from autoembed.study import mask_text, mask_url

    url = "postgresql+psycopg://user:s3cret-pw@db.internal:5432/studies"
    assert mask_url(url) == "postgresql+psycopg://user:***@db.internal:5432/studies"
    assert "s3cret-pw" not in mask_text(f"could not connect to {url}: password s3cret-pw rejected", url)

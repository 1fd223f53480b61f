"""A study in real PostgreSQL (started by .ci/run): search, resume, export with the password masked."""

from __future__ import annotations

import os
import uuid

import pytest
import yaml

from autoembed.recipe import export_recipe
from autoembed.search import SearchOptions, run_search

URL = os.environ.get("AUTOEMBED_TEST_POSTGRES_URL")
pytestmark = pytest.mark.postgres

SPACE = """
metric: recall@1
params:
  backbone_lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
fixed: {training.max_steps: 4, training.batch_size: 8, evaluation.every_steps: 2, data.max_seq_length: 16}
pruner: {type: none}
sampler: {type: random}
"""


@pytest.mark.skipif(URL is None and not os.environ.get("CI"), reason="no PostgreSQL (AUTOEMBED_TEST_POSTGRES_URL unset)")
def test_search_resume_and_export_on_postgresql(tmp_path, tiny_model, toy_data, capsys):
    assert URL, "CI must provide AUTOEMBED_TEST_POSTGRES_URL (scripts/test.sh starts PostgreSQL)"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    common = dict(study=name, model=str(tiny_model), train=str(toy_data["train"]), val=str(toy_data["val"]),
                  corpus=str(toy_data["corpus"]), space=str(space), storage=URL, executor="inline", cpus_per_trial=1)
    first = run_search(SearchOptions(trials=1, **common))
    second = run_search(SearchOptions(trials=2, **common))
    assert first.counts["COMPLETE"] == 1 and second.counts["COMPLETE"] == 2
    password = URL.split(":")[2].split("@")[0]
    assert password not in second.storage and "***" in second.storage
    recipe = tmp_path / "recipe.yaml"
    export_recipe(name, URL, recipe)
    text = recipe.read_text()
    assert password not in text
    assert yaml.safe_load(text)["provenance"]["study"]["storage"].count("***") == 1
    assert password not in capsys.readouterr().err

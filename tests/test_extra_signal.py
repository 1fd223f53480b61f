"""More signal from what the user has: synonym pairs (queries that share an answer) and extra training files."""

from __future__ import annotations

import json

import pytest

import autoembed.training as training
from autoembed.config import TrialConfig
from autoembed.data import Example, _group_key, load_dataset, read_corpus, read_examples, synonym_pairs
from autoembed.errors import AutoembedError
from autoembed.provenance import data_provenance
from autoembed.training import prepare, train
from tests.test_training import toy_config


def test_synonym_pairs_pair_queries_that_share_an_answer():
    rows = [Example(q, "doc a", doc_id="a") for q in ("a1", "a2", "a3")] + [Example("b1", "doc b", doc_id="b")]
    rows += [Example(q, "doc c", doc_id="c") for q in ("c1", "c2")]
    assert synonym_pairs(rows, 0.0, 0) == []
    pairs = synonym_pairs(rows, 1.0, 0)
    # a: a cycle of 3 pairs; b: none (one query); c: one pair
    assert len(pairs) == 4 and all(p.anchor != p.positive for p in pairs)
    group = {ex.anchor: ex.doc_id for ex in rows}
    assert all(group[p.anchor] == group[p.positive] for p in pairs)
    assert {p.anchor for p in pairs if group[p.anchor] == "a"} == {"a1", "a2", "a3"}
    assert len(synonym_pairs(rows, 0.5, 0)) == 3 and synonym_pairs(rows, 0.5, 0) == synonym_pairs(rows, 0.5, 0)


def test_training_with_synonym_pairs_trains_on_query_to_query_rows(tiny_model, toy_data, monkeypatch):
    seen = []
    real = training.compute_loss
    monkeypatch.setattr(training, "compute_loss", lambda config, batch: seen.append(batch) or real(config, batch))
    config = toy_config(tiny_model, toy_data, **{"data.synonym_pairs": 1.0, "training.max_steps": None, "training.epochs": 1.0})
    prepared = prepare(config)
    anchors = {ex.anchor for ex in prepared.dataset.train}
    with_synonyms = train(config, prepared=prepared)
    positives = [prepared.cache.texts[int(i)] for b in seen for i in b.positive_ids]
    assert any(p in anchors for p in positives)
    seen.clear()
    plain = train(config.replace(**{"data.synonym_pairs": 0.0}), prepared=prepared)
    assert not any(prepared.cache.texts[int(i)] in anchors for b in seen for i in b.positive_ids)
    assert with_synonyms.total_steps > plain.total_steps


def test_extra_train_only_trains_and_drops_validation_queries(tiny_model, toy_data, tmp_path):
    corpus = read_corpus(toy_data["corpus"])
    val = read_examples(toy_data["val"], corpus)
    extra = tmp_path / "extra.jsonl"
    rows = [
        {"query": "fever of the left knee", "doc_id": "d0"},
        {"query": val[0].anchor, "doc_id": "d1"},  # a validation query: dropped
        {"query": "acute sprain", "positive": val[1].anchor},  # a validation query as the positive: dropped
    ]
    extra.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = load_dataset(str(toy_data["train"]), str(toy_data["val"]), str(toy_data["corpus"]))
    data = load_dataset(str(toy_data["train"]), str(toy_data["val"]), str(toy_data["corpus"]), extra_train=[str(extra)])
    assert (data.extra_rows, data.extra_dropped) == (3, 2)
    assert data.train == plain.train + [Example("fever of the left knee", corpus["d0"], doc_id="d0", line=1)]
    assert data.val == plain.val
    config = toy_config(tiny_model, toy_data, **{"data.extra_train": [str(extra)]})
    assert data_provenance(config)["extra_train[0]"]["rows"] == 3
    prepared = prepare(config)
    assert prepared.key != prepare(toy_config(tiny_model, toy_data)).key
    assert any(ex.anchor == "fever of the left knee" for ex in prepared.dataset.train)
    assert "fever of the left knee" not in prepared.val_task.queries


@pytest.mark.parametrize(("value", "ok"), [(None, True), ("extra.jsonl", True), (["a.jsonl", "b.jsonl"], True), ([3], False), ({}, False)])
def test_extra_train_takes_a_list_of_paths(value, ok):
    data = {"model": "m", "data": {"train": "t.jsonl", "extra_train": value}}
    if ok:
        config = TrialConfig.from_dict(data)
        assert config.data.extra_train == ([value] if isinstance(value, str) else value)
        assert TrialConfig.from_dict(config.to_dict()) == config
    else:
        with pytest.raises(AutoembedError, match=r"data\.extra_train: must be a list of file paths or null"):
            TrialConfig.from_dict(data)


def test_group_key_is_what_synonyms_share():
    assert _group_key(Example("q", "p", doc_id="x")) == "doc:x" and _group_key(Example("q", "p")) == "pos:p"


def test_icd_extra_rows_from_notes_on_tiny_data():
    from autoembed.examples.icd10 import extra_train_rows, split_of

    codes = [f"A{i:02d}" for i in range(40)]
    train_codes = [c for c in codes if split_of(c, 0) == "train"]
    other = next(c for c in codes if split_of(c, 0) != "train")
    a, b = train_codes[:2]
    descriptions = {c: f"disease {c}" for c in codes}
    notes = [
        (a, ["index term one", "held out term", f"Disease {a}"], [f"some condition ({b}.-)", "a range (A00-A09)", f"hidden ({other})"], f"disease {a}, initial encounter"),
        (b, ["index term one"], [], None),
    ]
    rows, dropped = extra_train_rows(notes, descriptions, 0, {"held out term"})
    got = {(r["query"], r["doc_id"], r["source"]) for r in rows}
    assert got == {
        ("index term one", a, "includes"),
        ("index term one", b, "includes"),  # one term, two codes: two pairs
        ("some condition", b, "excludes"),  # an excludes note names the code it belongs to
        (f"disease {a}, initial encounter", a, "extension"),
    }
    assert dropped == 1  # the held-out query; the description itself, the range and the val/test code add nothing
    assert all(r["positive"] == descriptions[r["doc_id"]] for r in rows)

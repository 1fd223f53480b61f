"""The ICD-10-CM example task: corpus, code-level split, deterministic and atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("simple_icd_10_cm")

from autoembed.examples.icd10 import FRACTIONS, SPLITS, build_icd10, load_icd10_codes, main, split_of  # noqa: E402

FILES = ("corpus.jsonl", "train.jsonl", "val.jsonl", "test.jsonl", "extra_train.jsonl", "manifest.json")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("icd10_seed0")
    return out, build_icd10(out, seed=0)


@pytest.fixture(scope="module")
def splits(built) -> dict[str, list[dict]]:
    out, _ = built
    return {split: read_jsonl(out / f"{split}.jsonl") for split in SPLITS}


@pytest.fixture(scope="module")
def corpus(built) -> dict[str, str]:
    out, _ = built
    return {row["_id"]: row["text"] for row in read_jsonl(out / "corpus.jsonl")}


def test_corpus_is_every_category_and_subcategory(built, corpus):
    import simple_icd_10_cm as cm

    _, manifest = built
    chosen = {
        code
        for code in cm.get_all_codes()
        if cm.is_category(code) or cm.is_subcategory(code, include_extended_subcategories=False)
    }
    assert set(corpus) == chosen
    assert len(corpus) == manifest["counts"]["corpus"] == 46881
    assert all(text for text in corpus.values())


def test_manifest_counts_match_files(built, splits):
    out, manifest = built
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no temp files left behind
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["seed"] == 0
    assert manifest["source"]["package"] == "simple-icd-10-cm"
    for split in SPLITS:
        assert manifest["counts"][split] == len(splits[split]) > 0


def test_no_code_on_two_sides(splits):
    codes = {split: {row["doc_id"] for row in rows} for split, rows in splits.items()}
    assert not codes["train"] & codes["val"]
    assert not codes["train"] & codes["test"]
    assert not codes["val"] & codes["test"]


def test_rows_point_into_the_corpus(splits, corpus):
    for rows in splits.values():
        for row in rows:
            assert set(row) == {"query", "positive", "doc_id"}
            assert row["positive"] == corpus[row["doc_id"]]
            assert row["query"].casefold() != row["positive"].casefold()


def test_rows_are_unique(splits):
    pairs = [(row["query"], row["doc_id"]) for rows in splits.values() for row in rows]
    assert len(pairs) == len(set(pairs))


def test_every_inclusion_term_becomes_a_row(splits):
    expected = {
        (" ".join(term.split()), code)
        for code, description, terms in load_icd10_codes()
        for term in terms
        if " ".join(term.split()).casefold() != description.casefold()
    }
    assert {(row["query"], row["doc_id"]) for rows in splits.values() for row in rows} == expected


def test_split_fractions(built):
    _, manifest = built
    total = sum(manifest["counts"][split] for split in SPLITS)
    for split in SPLITS:
        assert manifest["counts"][split] / total == pytest.approx(FRACTIONS[split], abs=0.03)
        assert manifest["codes_per_split"][split] / 46881 == pytest.approx(FRACTIONS[split], abs=0.01)


def test_same_seed_gives_identical_files(built, tmp_path):
    out, _ = built
    build_icd10(tmp_path, seed=0)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_other_seed_gives_other_split(built, splits, tmp_path):
    out, _ = built
    manifest = build_icd10(tmp_path, seed=1)
    assert manifest["seed"] == 1
    assert (tmp_path / "corpus.jsonl").read_bytes() == (out / "corpus.jsonl").read_bytes()
    test_codes = {row["doc_id"] for row in read_jsonl(tmp_path / "test.jsonl")}
    assert test_codes != {row["doc_id"] for row in splits["test"]}


def test_up_to_date_folder_is_not_rebuilt(built, monkeypatch):
    import autoembed.examples.icd10 as icd10

    out, manifest = built
    mtimes = {name: (out / name).stat().st_mtime_ns for name in FILES}

    def fail():
        raise AssertionError("rebuilt an up-to-date folder")

    monkeypatch.setattr(icd10, "load_icd10_codes", fail)
    assert build_icd10(out, seed=0) == manifest
    assert {name: (out / name).stat().st_mtime_ns for name in FILES} == mtimes


@pytest.mark.parametrize(
    ("damage", "kwargs"),
    [
        (lambda out: (out / "val.jsonl").write_text("{}\n"), {}),  # a file changed since the build
        (lambda out: (out / "manifest.json").unlink(), {}),  # a rebuild was cut short
        (lambda out: None, {"force": True}),
    ],
    ids=["edited-file", "no-manifest", "force"],
)
def test_rebuilds_when_needed(built, tmp_path, damage, kwargs):
    out, manifest = built
    for name in FILES:
        (tmp_path / name).write_bytes((out / name).read_bytes())
    damage(tmp_path)
    assert build_icd10(tmp_path, seed=0, **kwargs) == manifest
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_rejects_non_int_seed(tmp_path):
    with pytest.raises(TypeError, match="'seed' parameter of build_icd10 must be an int. Got '0' instead"):
        build_icd10(tmp_path, seed="0")


def test_cli_prints_counts_and_paths(built, capsys):
    out, manifest = built
    assert main(["-o", str(out), "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    assert "up to date" in printed
    for name in FILES:
        assert str(out / name) in printed
    for split in SPLITS:
        assert str(manifest["counts"][split]) in printed


def test_extra_train_targets_train_codes_and_holds_no_held_out_query(built, splits, corpus):
    out, manifest = built
    extra = read_jsonl(out / "extra_train.jsonl")
    assert len(extra) == manifest["counts"]["extra_train"] > 1000
    held_out = {row["query"] for split in ("val", "test") for row in splits[split]}
    for row in extra:
        assert split_of(row["doc_id"], 0) == "train" and row["positive"] == corpus[row["doc_id"]]
        assert row["query"] not in held_out and row["source"] in ("includes", "excludes", "extension")
    assert {row["source"] for row in extra} == {"includes", "excludes", "extension"}

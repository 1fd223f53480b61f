"""Property-based tests of the readers a user feeds: whatever bytes, rows or YAML come in, the data readers and the
space parser either accept them or raise AutoembedError (one line for the CLI), never anything else; valid rows
come back as written."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoembed.data import read_corpus, read_examples, read_query_file
from autoembed.errors import AutoembedError
from autoembed.space import SearchSpace

# no example database: a run leaves nothing in the checkout
SETTINGS = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ["query", "anchor", "positive", "negative", "text1", "text2", "label", "doc_id", "_id", "text", "title"]
# text a file can hold as UTF-8 (no lone surrogates)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | TEXT, inner, max_size=3), max_leaves=8)
ROWS = st.lists(st.dictionaries(st.sampled_from(KEYS) | TEXT, JSON_VALUES, max_size=5) | JSON_VALUES, min_size=1, max_size=5)


@contextlib.contextmanager
def _written(suffix: str, content: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="autoembed-prop-") as folder:
        path = Path(folder) / f"rows{suffix}"
        path.write_bytes(content)
        yield path


def read_all(path: Path) -> None:
    """Every reader of user rows on one file: only AutoembedError may come out."""
    corpus = {"d0": "acute pain", "1": "left arm"}
    for read in (lambda p: read_examples(p, corpus), read_corpus, lambda p: read_query_file(p, corpus)):
        try:
            read(path)
        except AutoembedError as exc:
            assert str(path) in str(exc)  # the message names the file


@SETTINGS
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_random_bytes_raise_nothing_but_autoembed_error(content, suffix):
    with _written(suffix, content) as path:
        read_all(path)


@SETTINGS
@given(rows=ROWS, ensure_ascii=st.booleans())
def test_random_json_rows_raise_nothing_but_autoembed_error(rows, ensure_ascii):
    with _written(".jsonl", "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in rows).encode()) as path:
        read_all(path)


@SETTINGS
@given(header=st.lists(st.sampled_from(KEYS) | TEXT, min_size=1, max_size=4), cells=st.lists(st.lists(TEXT, max_size=5), max_size=4))
def test_random_csv_rows_raise_nothing_but_autoembed_error(header, cells):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(cells)
    with _written(".csv", buffer.getvalue().encode()) as path:
        read_all(path)


NONBLANK = TEXT.filter(lambda s: s.strip() != "")


@SETTINGS
@given(pairs=st.lists(st.tuples(NONBLANK, NONBLANK), min_size=1, max_size=6), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_valid_pairs_round_trip(pairs, suffix):
    if suffix == ".jsonl":
        content = "".join(json.dumps({"query": q, "positive": p}, ensure_ascii=False) + "\n" for q, p in pairs)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["query", "positive"])
        writer.writerows(pairs)
        content = buffer.getvalue()
    with _written(suffix, content.encode()) as path:
        examples = read_examples(path)
    assert [(ex.anchor, ex.positive) for ex in examples] == pairs


@SETTINGS
@given(docs=st.dictionaries(NONBLANK, NONBLANK, min_size=1, max_size=6))
def test_valid_corpus_round_trips(docs):
    with _written(".jsonl", "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()).encode()) as path:
        assert read_corpus(path) == docs


# ---- the space parser: YAML-ish mappings built from the words a space uses
SPACE_WORDS = ["metric", "params", "fixed", "pruner", "sampler", "starting_points", "name", "type", "low", "high", "log", "step",
               "choices", "target", "when", "backbone_lr", "batch_size", "loss", "output_dim", "temperature", "float", "int",
               "categorical", "median", "tpe", "random", "none", "threshold", "recall@10", "training.max_steps", "n_startup_trials"]
WORD = st.sampled_from(SPACE_WORDS)
YAML_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(-1e3, 1e3, allow_nan=False), WORD, TEXT)
YAML_VALUES = st.recursive(YAML_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(WORD, inner, max_size=4), max_leaves=12)


def parse_space(path: Path) -> None:
    try:
        space = SearchSpace.from_yaml_file(path)
    except AutoembedError as exc:
        assert str(path) in str(exc)  # the message names the file
    else:
        assert isinstance(space.params, dict)


@SETTINGS
@given(space=st.dictionaries(WORD, YAML_VALUES, max_size=6))
def test_random_spaces_raise_nothing_but_autoembed_error(space):
    with _written(".yaml", yaml.safe_dump(space, allow_unicode=True).encode()) as path:
        parse_space(path)


@SETTINGS
@given(text=st.text(st.sampled_from(list("{}[]:-,'\" \n\t#&*!|>%@`abc01.")), max_size=60))
def test_random_yaml_text_raises_nothing_but_autoembed_error(text):
    with _written(".yaml", text.encode()) as path:
        parse_space(path)

"""Reading data files: every bad row named by file, line and problem; CSV; the grouped split; the retrieval task."""

from __future__ import annotations

import json
import re
from contextlib import nullcontext

import pytest

from autoembed.data import (
    Example,
    load_dataset,
    read_corpus,
    read_examples,
    read_query_file,
    retrieval_task,
    split_examples,
    sub_task,
)
from autoembed.errors import AutoembedError

CORPUS = {"d1": "alpha document", "d2": "beta document", "d3": "gamma document"}


def jsonl(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


# (file name, file text, expected error after "{file}" or None, rows expected when valid)
CASES = [
    pytest.param(
        "t.jsonl", jsonl({"query": "q", "positive": "p"}, {"anchor": "a", "positive": "p2"}), None, 2, id="valid"
    ),
    pytest.param(
        "t.jsonl",
        jsonl({"query": "q", "positive": "p"}, '{"query": "q2",'),
        ":2: invalid JSON: Expecting property name enclosed in double quotes (column 16)",
        0,
        id="invalid-json",
    ),
    pytest.param("t.jsonl", jsonl({"query": "q"}), ":1: positive: missing field 'positive'", 0, id="missing-positive"),
    pytest.param("t.jsonl", jsonl({"positive": "p"}), ":1: query: missing field 'query'", 0, id="missing-anchor"),
    pytest.param(
        "t.jsonl",
        jsonl({"query": "q", "positive": "p"}, {"query": "  ", "positive": "p"}),
        ":2: query: field 'query' is empty",
        0,
        id="empty-field",
    ),
    pytest.param(
        "t.jsonl",
        jsonl({"query": "q", "positive": 3}),
        ":1: positive: field 'positive' must be a string, got int 3",
        0,
        id="non-string",
    ),
    pytest.param(
        "t.jsonl",
        jsonl({"query": ["q"], "positive": "p"}),
        ":1: query: field 'query' must be a string, got list ['q']",
        0,
        id="list-text",
    ),
    pytest.param(
        "t.jsonl",
        jsonl({"query": "q", "doc_id": "d9"}),
        ":1: doc_id: unknown doc_id 'd9': not in the corpus",
        0,
        id="unknown-doc-id",
    ),
    pytest.param(
        "t.jsonl",
        jsonl({"query": "q", "doc_id": 1.5}),
        ":1: doc_id: field 'doc_id' must be a string, got 1.5",
        0,
        id="float-doc-id",
    ),
    pytest.param("t.jsonl", jsonl("[1, 2]"), ":1: expected a JSON object, got list", 0, id="not-an-object"),
    pytest.param("t.jsonl", "", ": data file is empty", 0, id="empty-file"),
    pytest.param("t.jsonl", "\n  \n", ": data file is empty", 0, id="blank-file"),
    pytest.param(
        "t.jsonl",
        jsonl({"query": "q", "positive": "p"}, "", {"query": "q", "positive": ""}),
        ":3: positive: field 'positive' is empty",
        0,
        id="line-counts-blank-lines",
    ),
    pytest.param(
        "t.jsonl",
        jsonl({"text1": "a", "text2": "b", "label": 2}),
        ":1: label: field 'label' must be 0 or 1, got 2",
        0,
        id="bad-label",
    ),
    pytest.param(
        "t.jsonl",
        jsonl({"text1": "a", "text2": "b", "label": True}),
        ":1: label: field 'label' must be 0 or 1, got True",
        0,
        id="bool-label",
    ),
    pytest.param(
        "t.jsonl", jsonl({"text1": "a", "label": 1}), ":1: text2: missing field 'text2'", 0, id="labeled-missing-text2"
    ),
    pytest.param(
        "t.jsonl",
        jsonl({"query": "q", "positive": "p", "negative": []}),
        ":1: negative: field 'negative' must be a string or a non-empty list of strings, got []",
        0,
        id="empty-negatives",
    ),
    pytest.param(
        "t.jsonl",
        jsonl({"query": "q", "positive": "p", "negative": ["n", 4]}),
        ":1: negative: field 'negative' holds 4; each negative must be a non-empty string",
        0,
        id="non-string-negative",
    ),
    pytest.param(
        "t.txt", "q\tp\n", ": unsupported file type '.txt'; expected .jsonl or .csv", 0, id="unsupported-type"
    ),
    pytest.param(
        "t.csv", "query,positive\nq,p\nq2,,\n", ":3: row has more fields than the header", 0, id="csv-extra-field"
    ),
    pytest.param(
        "t.csv", "query,positive\nq,p\nq2,\n", ":3: positive: field 'positive' is empty", 0, id="csv-empty-cell"
    ),
    pytest.param("t.csv", "", ": data file is empty", 0, id="csv-empty-file"),
    pytest.param("t.csv", "query,positive\n", ": data file is empty", 0, id="csv-header-only"),
]


@pytest.mark.parametrize(("name", "text", "error", "n_rows"), CASES)
def test_bad_rows_are_named_by_file_line_and_problem(tmp_path, name, text, error, n_rows):
    path = tmp_path / name
    path.write_text(text)
    expect = (
        nullcontext() if error is None else pytest.raises(AutoembedError, match="^" + re.escape(f"{path}{error}") + "$")
    )
    with expect:
        assert len(read_examples(path, CORPUS)) == n_rows


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "absent.jsonl"
    with pytest.raises(AutoembedError, match="^" + re.escape(f"{path}: data file not found") + "$"):
        read_examples(path)


def test_doc_id_without_a_corpus_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(jsonl({"query": "q", "doc_id": "d1"}))
    with pytest.raises(
        AutoembedError, match=re.escape(f"{path}:1: doc_id: row has doc_id 'd1' but no corpus file was given")
    ):
        read_examples(path)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (jsonl({"_id": "a", "text": "x"}, {"_id": 7, "title": "T", "text": "y"}), None),
        (jsonl({"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}), ":2: _id: duplicate _id 'a'"),
        (jsonl({"text": "x"}), ":1: _id: field '_id' must be a non-empty string, got None"),
        (jsonl({"_id": "a"}), ":1: text: missing field 'text'"),
        ("", ": corpus file is empty"),
    ],
)
def test_corpus_rows(tmp_path, text, error):
    path = tmp_path / "corpus.jsonl"
    path.write_text(text)
    expect = (
        nullcontext() if error is None else pytest.raises(AutoembedError, match="^" + re.escape(f"{path}{error}") + "$")
    )
    with expect:
        assert read_corpus(path) == {"a": "x", "7": "T y"}  # integer ids become strings, titles are prepended


def test_row_kinds_from_jsonl(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        jsonl(
            {"query": "q1", "positive": "p1"},
            {"anchor": "q2", "positive": "p2", "negative": "n2"},
            {"query": "q3", "positive": "p3", "negative": ["n3a", "n3b"]},
            {"query": "q4", "doc_id": "d2"},
            {"query": "q5", "doc_id": 1, "positive": "own text"},
        )
    )
    rows = read_examples(path, {**CORPUS, "1": "one"})
    assert rows == [
        Example("q1", "p1", line=1),
        Example("q2", "p2", ("n2",), line=2),
        Example("q3", "p3", ("n3a", "n3b"), line=3),
        Example("q4", "beta document", doc_id="d2", line=4),  # the corpus text is the positive
        Example("q5", "own text", doc_id="1", line=5),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'query,positive\nwhat is it,it is this\n"a, b",c\n',
            [Example("what is it", "it is this", line=2), Example("a, b", "c", line=3)],
        ),
        ("anchor,positive,negative\nq,p,n\nq2,p2,\n", [Example("q", "p", ("n",), line=2), Example("q2", "p2", line=3)]),
        ('query,positive,negative\nq,p,"[""n1"", ""n2""]"\n', [Example("q", "p", ("n1", "n2"), line=2)]),
        (
            "text1,text2,label\na,b,1\nc,d,0\n",
            [Example("a", "b", label=1.0, line=2), Example("c", "d", label=0.0, line=3)],
        ),
    ],
    ids=["pairs", "triplet", "json-list-negatives", "labeled"],
)
def test_csv_rows(tmp_path, text, expected):
    path = tmp_path / "t.csv"
    path.write_text(text)
    assert read_examples(path) == expected


def grouped_rows(n_docs: int = 40, per_doc: int = 4) -> list[Example]:
    return [Example(f"q{d}-{i}", f"doc {d}", doc_id=f"d{d}") for d in range(n_docs) for i in range(per_doc)]


@pytest.mark.parametrize("with_doc_ids", [True, False])
def test_split_keeps_each_document_on_one_side(with_doc_ids):
    rows = grouped_rows()
    if not with_doc_ids:  # then the positive text is the group
        rows = [Example(ex.anchor, ex.positive) for ex in rows]
    train, val = split_examples(rows, fraction=0.25, seed=0)
    assert len(train) + len(val) == len(rows)
    assert {ex.positive for ex in train}.isdisjoint({ex.positive for ex in val})
    assert 0.1 < len(val) / len(rows) < 0.45
    assert all(len([ex for ex in val if ex.positive == p]) == 4 for p in {ex.positive for ex in val})  # whole groups


def test_split_is_seeded_and_stable_under_row_order():
    rows = grouped_rows()
    _, val0 = split_examples(rows, fraction=0.25, seed=0)
    _, val0_again = split_examples(list(reversed(rows)), fraction=0.25, seed=0)
    _, val1 = split_examples(rows, fraction=0.25, seed=1)
    assert {ex.anchor for ex in val0} == {ex.anchor for ex in val0_again}
    assert {ex.anchor for ex in val0} != {ex.anchor for ex in val1}


@pytest.mark.parametrize(
    ("n_docs", "expect"),
    [
        (3, nullcontext()),
        (1, pytest.raises(AutoembedError, match="cannot split a validation set off fewer than 2 distinct documents")),
    ],
)
def test_split_of_a_tiny_file_falls_back_to_whole_groups(n_docs, expect):
    rows = grouped_rows(n_docs, per_doc=2)
    with expect:
        train, val = split_examples(rows, fraction=0.01, seed=0)
        assert train and val
        assert {ex.doc_id for ex in train}.isdisjoint({ex.doc_id for ex in val})


def test_load_dataset_splits_the_training_file_by_document(toy_data):
    dataset = load_dataset(str(toy_data["train"]), None, str(toy_data["corpus"]), val_fraction=0.3, split_seed=3)
    assert dataset.val and dataset.train
    assert {ex.doc_id for ex in dataset.train}.isdisjoint({ex.doc_id for ex in dataset.val})
    n_rows = sum(1 for line in toy_data["train"].read_text().splitlines() if line.strip())
    assert len(dataset.train) + len(dataset.val) == n_rows
    assert dataset.files == {"train": str(toy_data["train"]), "corpus": str(toy_data["corpus"])}
    again = load_dataset(str(toy_data["train"]), None, str(toy_data["corpus"]), val_fraction=0.3, split_seed=3)
    assert again.val == dataset.val


def test_retrieval_task_with_a_corpus_points_at_documents():
    rows = [
        Example("qa", CORPUS["d1"], doc_id="d1"),
        Example("qb", CORPUS["d3"], doc_id="d3"),
        Example("qa", CORPUS["d2"], doc_id="d2"),  # the same query answers two documents
    ]
    task = retrieval_task(rows, CORPUS)
    assert task.queries == ["qa", "qb"]
    assert task.corpus == list(CORPUS.values())
    assert task.relevant == [frozenset({0, 1}), frozenset({2})]


def test_retrieval_task_matches_positive_text_to_the_corpus():
    """A row without doc_id whose positive is a corpus text must not add that text a second time."""
    rows = [Example("qa", CORPUS["d2"]), Example("qb", "a text outside the corpus")]
    task = retrieval_task(rows, CORPUS)
    assert task.corpus == [*CORPUS.values(), "a text outside the corpus"]
    assert task.relevant == [frozenset({1}), frozenset({3})]


def test_retrieval_task_without_a_corpus_uses_positives_and_distractors():
    rows = [Example("q1", "p1"), Example("q2", "p2"), Example("q3", "p1"), Example("q0", "p9", label=0.0)]
    task = retrieval_task(rows, None, extra_documents=["x", "p2"])
    assert task.queries == ["q1", "q2", "q3"]  # label-0 pairs are no queries
    assert task.corpus == ["p1", "p2", "x"]  # a distractor that is a positive is not repeated
    assert task.relevant == [frozenset({0}), frozenset({1}), frozenset({0})]


def test_retrieval_task_samples_are_seeded_and_keep_relevant_documents():
    corpus = {f"d{i}": f"document {i}" for i in range(50)}
    rows = [Example(f"q{i}", corpus[f"d{i}"], doc_id=f"d{i}") for i in range(50)]
    task = retrieval_task(rows, corpus, max_queries=5, max_corpus=12, seed=7)
    again = retrieval_task(rows, corpus, max_queries=5, max_corpus=12, seed=7)
    other = retrieval_task(rows, corpus, max_queries=5, max_corpus=12, seed=8)
    assert len(task.queries) == 5 and len(task.corpus) == 12
    assert task == again and task.queries != other.queries
    for query, rel in zip(task.queries, task.relevant, strict=True):
        (doc,) = rel
        assert task.corpus[doc] == corpus["d" + query[1:]]


def test_an_interim_sub_task_keeps_answers_then_nearest_distractors_then_a_seeded_fill():
    """evaluation.interim_*: a smaller task drawn from the validation task, answers kept, each query's nearest other
    documents next (rank by rank), the rest a seeded random fill; the same draw every time."""
    corpus = {f"d{i}": f"document {i}" for i in range(40)}
    rows = [Example(f"q{i}", corpus[f"d{i}"], doc_id=f"d{i}") for i in range(30)]
    rows.append(Example("q0", corpus["d35"], doc_id="d35"))  # q0 has two answers
    task = retrieval_task(rows, corpus)

    def nearest(queries, documents, n):  # query qi is nearest to "document i+1", then to i+2, i+3, ...
        def order(q):
            return sorted(range(len(documents)), key=lambda d: (int(documents[d].split()[1]) - int(q[1:]) - 1) % 40)

        return [order(q)[:n] for q in queries]

    sub = sub_task(task, 4, 10, seed=3, distractors=1, nearest=nearest)
    assert sub == sub_task(task, 4, 10, seed=3, distractors=1, nearest=nearest) != sub_task(task, 4, 10, seed=4, distractors=1, nearest=nearest)
    assert len(sub.queries) == 4 and len(sub.corpus) == 10 and set(sub.queries) <= set(task.queries)
    for query, rel in zip(sub.queries, sub.relevant, strict=True):
        answers = {task.corpus[d] for d in task.relevant[task.queries.index(query)]}
        assert {sub.corpus[d] for d in rel} == answers  # every answer kept (q0's two)
        assert f"document {int(query[1:]) + 1}" in sub.corpus  # its nearest distractor kept
    # no sampling asked: the task itself
    assert sub_task(task, None, None) == task


def test_query_file_by_doc_id_or_positive_text(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        jsonl(
            {"query": "qa", "doc_id": "d2"},
            {"query": "qb", "positive": "gamma document"},
            {"query": "qa", "doc_id": "d1"},
        )
    )
    task = read_query_file(path, CORPUS)
    assert task.queries == ["qa", "qb"]
    assert task.corpus == list(CORPUS.values())
    assert task.relevant == [frozenset({1, 0}), frozenset({2})]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"query": "q", "doc_id": "zz"}, ":1: doc_id: unknown doc_id 'zz': not in the corpus"),
        (
            {"query": "q", "positive": "delta document"},
            ":1: positive: positive text matches no corpus text exactly: 'delta document'",
        ),
        ({"query": "q"}, ":1: positive: missing field 'positive'"),
    ],
)
def test_query_file_errors(tmp_path, row, error):
    path = tmp_path / "q.jsonl"
    path.write_text(jsonl(row))
    with pytest.raises(AutoembedError, match="^" + re.escape(f"{path}{error}") + "$"):
        read_query_file(path, CORPUS)

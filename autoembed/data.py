"""Reading training, validation and corpus files; splitting; the validation retrieval task.

Row kinds (JSONL objects or CSV rows):
- pair: ``{"query" | "anchor": str, "positive": str}``
- triplet: a pair plus ``"negative"``: a string or a list of strings
- labeled pair: ``{"text1": str, "text2": str, "label": 0 | 1}`` (for the contrastive loss)

A pair or triplet row may carry a class in ``"label"`` (a string or an integer), which
``loss.classification_weight`` trains on.

Any row may carry ``"doc_id"`` naming a corpus row ``{"_id": str, "text": str}`` (the BEIR convention); the
corpus is what retrieval metrics search. A pair row with a ``doc_id`` and no ``positive`` takes the corpus
text as its positive.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoembed.errors import AutoembedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One training or validation row, normalised."""

    anchor: str
    positive: str
    negatives: tuple[str, ...] = ()
    label: float | None = None  # set for labeled pairs only
    category: str | None = None  # a pair or triplet row's class, from its "label" field
    doc_id: str | None = None
    line: int = 0


@dataclass
class RetrievalTask:
    """Queries against a corpus: ``relevant[i]`` holds the corpus indices that answer ``queries[i]``."""

    queries: list[str]
    corpus: list[str]
    relevant: list[frozenset[int]]

    def __post_init__(self) -> None:
        if len(self.queries) != len(self.relevant):
            raise ValueError("queries and relevant differ in length")


@dataclass
class Dataset:
    """What one run trains and validates on."""

    train: list[Example]
    val: list[Example]
    corpus: dict[str, str] | None = None
    files: dict[str, str] = field(default_factory=dict)
    # data.extra_train: rows read from those files, and how many were dropped as validation queries
    extra_rows: int = 0
    extra_dropped: int = 0


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _decoded_lines(path: Path, fh) -> Iterator[str]:
    """The file's lines as text; a line that is not UTF-8 is an error naming it (a leading BOM is dropped)."""
    for number, raw in enumerate(fh, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise AutoembedError(
                f"not UTF-8 text: byte {raw[exc.start:exc.start + 1]!r} at column {exc.start + 1}; save the file as UTF-8", file=str(path), line=number
            ) from None


def _iter_records(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("rb") as fh:
            reader = csv.DictReader(_decoded_lines(path, fh))
            try:
                if not reader.fieldnames:
                    return
                duplicates = sorted({name for name in reader.fieldnames if reader.fieldnames.count(name) > 1})
                if duplicates:
                    raise AutoembedError(f"duplicate column {duplicates[0]!r} in the header", file=str(path), line=1, key=duplicates[0])
                for row in reader:
                    if None in row:
                        raise AutoembedError("row has more fields than the header", file=str(path), line=reader.line_num)
                    yield reader.line_num, {k: v for k, v in row.items() if v != "" or k in ("query", "anchor", "positive", "text1", "text2", "text")}
            except csv.Error as exc:
                raise AutoembedError(f"invalid CSV: {exc}", file=str(path), line=reader.line_num or None) from None
        return
    with path.open("rb") as fh:
        for number, raw in enumerate(_decoded_lines(path, fh), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.rstrip("\r\n"), object_pairs_hook=_no_duplicates)
            except json.JSONDecodeError as exc:
                raise AutoembedError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=str(path), line=number) from None
            except _DuplicateKey as exc:
                raise AutoembedError(f"duplicate key {exc.args[0]!r} in one JSON object", file=str(path), line=number, key=str(exc.args[0])) from None
            except RecursionError:
                raise AutoembedError("invalid JSON: nested too deeply", file=str(path), line=number) from None
            yield number, record


def _read(path: str | Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    path = Path(path)
    if not path.is_file():
        raise AutoembedError(f"{what} file not found", file=str(path))
    if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".ndjson"):
        raise AutoembedError(f"unsupported file type {path.suffix!r}; expected .jsonl or .csv", file=str(path))
    records = []
    for number, record in _iter_records(path):
        if not isinstance(record, dict):
            raise AutoembedError(f"expected a JSON object, got {type(record).__name__}", file=str(path), line=number)
        records.append((number, record))
    if not records:
        raise AutoembedError(f"{what} file is empty", file=str(path))
    return records


def _text(record: dict[str, Any], key: str, path: Path, line: int) -> str:
    value = record.get(key)
    if value is None:
        raise AutoembedError(f"missing field {key!r}", file=str(path), line=line, key=key)
    if not isinstance(value, str):
        raise AutoembedError(f"field {key!r} must be a string, got {type(value).__name__} {value!r}", file=str(path), line=line, key=key)
    if not value.strip():
        raise AutoembedError(f"field {key!r} is empty", file=str(path), line=line, key=key)
    return value


def read_corpus(path: str | Path) -> dict[str, str]:
    """Read a corpus file of ``{"_id", "text"}`` rows (``title`` is prepended when present)."""
    path = Path(path)
    corpus: dict[str, str] = {}
    for line, record in _read(path, "corpus"):
        doc_id = record.get("_id")
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id:
            raise AutoembedError(f"field '_id' must be a non-empty string, got {doc_id!r}", file=str(path), line=line, key="_id")
        text = _text(record, "text", path, line)
        title = record.get("title")
        if isinstance(title, str) and title.strip():
            text = f"{title} {text}"
        if doc_id in corpus:
            raise AutoembedError(f"duplicate _id {doc_id!r}", file=str(path), line=line, key="_id")
        corpus[doc_id] = text
    return corpus


def read_examples(path: str | Path, corpus: dict[str, str] | None = None) -> list[Example]:
    """Read pair, triplet or labeled-pair rows, checking every field and every ``doc_id``."""
    path = Path(path)
    examples = []
    for line, record in _read(path, "data"):
        doc_id = record.get("doc_id")
        if doc_id is not None:
            if isinstance(doc_id, int) and not isinstance(doc_id, bool):
                doc_id = str(doc_id)
            if not isinstance(doc_id, str):
                raise AutoembedError(f"field 'doc_id' must be a string, got {doc_id!r}", file=str(path), line=line, key="doc_id")
            if corpus is None:
                raise AutoembedError(f"row has doc_id {doc_id!r} but no corpus file was given", file=str(path), line=line, key="doc_id")
            if doc_id not in corpus:
                raise AutoembedError(f"unknown doc_id {doc_id!r}: not in the corpus", file=str(path), line=line, key="doc_id")
        if "text1" in record or ("label" in record and "query" not in record and "anchor" not in record):
            label = record.get("label")
            if isinstance(label, str) and label.strip() in ("0", "1", "0.0", "1.0"):
                label = float(label)
            if not isinstance(label, (int, float)) or isinstance(label, bool) or label not in (0, 1):
                raise AutoembedError(f"field 'label' must be 0 or 1, got {label!r}", file=str(path), line=line, key="label")
            examples.append(
                Example(_text(record, "text1", path, line), _text(record, "text2", path, line), label=float(label), doc_id=doc_id, line=line)
            )
            continue
        anchor_key = "anchor" if "anchor" in record else "query"
        anchor = _text(record, anchor_key, path, line)
        if "positive" in record or doc_id is None:
            positive = _text(record, "positive", path, line)
        else:
            positive = corpus[doc_id]
        negatives: tuple[str, ...] = ()
        if "negative" in record:
            raw = record["negative"]
            items = [raw] if isinstance(raw, str) else raw
            if path.suffix.lower() == ".csv" and isinstance(raw, str) and raw.lstrip().startswith("["):
                try:  # a CSV cell may hold a JSON list of negatives
                    items = json.loads(raw)
                except json.JSONDecodeError:
                    items = [raw]
            if not isinstance(items, list) or not items:
                raise AutoembedError(f"field 'negative' must be a string or a non-empty list of strings, got {raw!r}", file=str(path), line=line, key="negative")
            for item in items:
                if not isinstance(item, str) or not item.strip():
                    raise AutoembedError(f"field 'negative' holds {item!r}; each negative must be a non-empty string", file=str(path), line=line, key="negative")
            negatives = tuple(items)
        category = record.get("label")
        if category is not None:
            if isinstance(category, int) and not isinstance(category, bool):
                category = str(category)
            if not isinstance(category, str) or not category.strip():
                raise AutoembedError(f"field 'label' of a query row is its class: a non-empty string or an integer, got {category!r}", file=str(path), line=line, key="label")
        examples.append(Example(anchor, positive, negatives, doc_id=doc_id, line=line, category=category))
    return examples


def _group_key(example: Example) -> str:
    return f"doc:{example.doc_id}" if example.doc_id is not None else f"pos:{example.positive}"


def _fraction(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_examples(examples: list[Example], *, fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split off a validation share, grouped so one document's queries stay on one side.

    The group of a row is its ``doc_id`` (or its positive text); a group goes to validation when the hash of
    ``(seed, group)`` falls below ``fraction``, so the split is stable under row order and file growth.
    """
    train, val = [], []
    for ex in examples:
        (val if _fraction(seed, _group_key(ex)) < fraction else train).append(ex)
    if not val or not train:  # tiny files: fall back to a seeded shuffle of the groups
        groups = sorted({_group_key(ex) for ex in examples})
        if len(groups) < 2:
            raise AutoembedError("cannot split a validation set off fewer than 2 distinct documents; give a validation file")
        random.Random(seed).shuffle(groups)
        n_val = max(1, round(len(groups) * fraction))
        val_groups = set(groups[:n_val])
        train = [ex for ex in examples if _group_key(ex) not in val_groups]
        val = [ex for ex in examples if _group_key(ex) in val_groups]
    return train, val


def synonym_pairs(examples: list[Example], ratio: float, seed: int) -> list[Example]:
    """Query -> query pairs from queries that share an answer (the data's own synonyms), ``ratio`` x the rows.

    The queries of each answer (its ``doc_id``, else its positive text) are put in a seeded order and each is paired
    with the next, round the cycle (two queries: one pair), so every query appears and no answer contributes more
    pairs than it has queries; then a seeded sample of ``round(ratio * len(examples))`` of them is kept.
    """
    if ratio <= 0:
        return []
    groups: dict[str, list[str]] = {}
    for ex in examples:
        if ex.label is None:
            anchors = groups.setdefault(_group_key(ex), [])
            if ex.anchor not in anchors:
                anchors.append(ex.anchor)
    rng = random.Random(seed)
    pairs: list[Example] = []
    for key in sorted(groups):
        anchors = groups[key]
        if len(anchors) < 2:
            continue
        rng.shuffle(anchors)
        links = zip(anchors, anchors[1:] + anchors[:1], strict=True) if len(anchors) > 2 else [(anchors[0], anchors[1])]
        pairs.extend(Example(a, b) for a, b in links)
    want = min(len(pairs), round(ratio * len(examples)))
    return rng.sample(pairs, want) if want < len(pairs) else pairs


def drop_queries(examples: list[Example], queries: set[str]) -> tuple[list[Example], int]:
    """The rows none of whose texts (anchor, positive) is one of ``queries``, and how many were dropped."""
    kept = [ex for ex in examples if ex.anchor not in queries and ex.positive not in queries]
    return kept, len(examples) - len(kept)


def load_dataset(
    train: str,
    val: str | None = None,
    corpus: str | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    extra_train: list[str] | None = None,
) -> Dataset:
    """Read the files a config names and split validation off training when no validation file is given.

    ``extra_train`` files only add training rows, after the split; a row whose anchor or positive is a validation
    query is dropped (counted in ``extra_dropped``), so validation never measures what training saw.
    """
    corpus_map = read_corpus(corpus) if corpus else None
    train_rows = read_examples(train, corpus_map)
    if val:
        val_rows = read_examples(val, corpus_map)
    else:
        train_rows, val_rows = split_examples(train_rows, fraction=val_fraction, seed=split_seed)
    files = {"train": str(train)}
    if val:
        files["val"] = str(val)
    if corpus:
        files["corpus"] = str(corpus)
    extra: list[Example] = []
    for i, path in enumerate(extra_train or ()):
        extra.extend(read_examples(path, corpus_map))
        files[f"extra_train[{i}]"] = str(path)
    kept, dropped = drop_queries(extra, {ex.anchor for ex in val_rows})
    if dropped:
        log.warning("data.extra_train: dropped %d of %d rows whose text is a validation query", dropped, len(extra))
    return Dataset(train=train_rows + kept, val=val_rows, corpus=corpus_map, files=files, extra_rows=len(extra), extra_dropped=dropped)


def retrieval_task(
    examples: list[Example],
    corpus: dict[str, str] | None,
    *,
    extra_documents: list[str] = (),
    max_queries: int | None = None,
    max_corpus: int | None = None,
    seed: int = 0,
    distractors: int = 0,
    nearest: Callable[[list[str], list[str], int], list[list[int]]] | None = None,
) -> RetrievalTask:
    """Build the retrieval task that validation measures.

    Queries are the anchors of rows with a positive (labeled pairs count when label is 1). Relevant documents
    are the row's ``doc_id`` in the corpus, or else its positive text. Without a corpus, the corpus is every
    distinct positive (``extra_documents`` add distractors). ``max_queries`` and ``max_corpus`` take a seeded
    sample, the same for every trial; the sampled queries' relevant documents are always kept. With
    ``distractors`` and ``nearest`` (``nearest(queries, documents, n)`` -> each query's n best document indices),
    each sampled query's ``distractors`` nearest other documents are kept next, rank by rank, before the random
    fill (autoembed/mining.py says why).
    """
    rows = [ex for ex in examples if ex.label is None or ex.label == 1]
    # a positive that is a corpus text is that document: adding it again would make a tie with a non-relevant copy
    corpus_id_of = {t: i for i, t in reversed(corpus.items())} if corpus is not None else {}

    def doc_key(ex: Example) -> str:
        if corpus is not None and ex.doc_id is not None:
            return f"id:{ex.doc_id}"
        return f"id:{corpus_id_of[ex.positive]}" if ex.positive in corpus_id_of else f"text:{ex.positive}"

    # one query text may answer several documents: merge them
    query_rel: dict[str, set[str]] = {}
    for ex in rows:
        query_rel.setdefault(ex.anchor, set()).add(doc_key(ex))
    queries = list(query_rel)
    rng = random.Random(seed)
    if max_queries is not None and len(queries) > max_queries:
        queries = sorted(rng.sample(queries, max_queries), key=queries.index)

    if corpus is not None:
        doc_keys = [f"id:{i}" for i in corpus]
        doc_text = {f"id:{i}": t for i, t in corpus.items()}
    else:
        doc_keys, doc_text = [], {}
    for ex in rows:
        key = doc_key(ex)
        if key not in doc_text:
            doc_text[key] = ex.positive
            doc_keys.append(key)
    for text in extra_documents:
        key = f"text:{text}"
        if key not in doc_text:
            doc_text[key] = text
            doc_keys.append(key)

    if max_corpus is not None and len(doc_keys) > max_corpus:
        needed = {k for q in queries for k in query_rel[q]}
        keep = _corpus_sample(doc_keys, needed, doc_text.__getitem__, queries, max_corpus, distractors, nearest, random.Random(seed + 1))
        doc_keys = [k for k in doc_keys if k in keep]
    index = {k: i for i, k in enumerate(doc_keys)}
    relevant = [frozenset(index[k] for k in query_rel[q]) for q in queries]
    return RetrievalTask(queries=queries, corpus=[doc_text[k] for k in doc_keys], relevant=relevant)


def _corpus_sample(docs: list, needed: set, text: Callable, queries: list[str], max_corpus: int, distractors: int, nearest, rng: random.Random) -> set:
    """Which of ``docs`` a corpus sample keeps: the ``needed`` ones (the sampled queries' answers), then each query's
    ``distractors`` nearest others by ``nearest``, rank by rank, then a random fill by ``rng`` up to ``max_corpus``."""
    others = [k for k in docs if k not in needed]
    keep = set(needed)
    if distractors and nearest is not None:
        ranked = nearest(queries, [text(k) for k in others], distractors)
        for rank in range(distractors):
            for row in ranked:
                if len(keep) < max_corpus and rank < len(row):
                    keep.add(others[row[rank]])
    rest = [k for k in others if k not in keep]
    keep |= set(rng.sample(rest, min(max(0, max_corpus - len(keep)), len(rest))))
    return keep


def sub_task(
    task: RetrievalTask,
    max_queries: int | None,
    max_corpus: int | None,
    *,
    seed: int = 0,
    distractors: int = 0,
    nearest: Callable[[list[str], list[str], int], list[list[int]]] | None = None,
) -> RetrievalTask:
    """A seeded smaller task drawn from ``task`` the way :func:`retrieval_task` draws from the data: ``max_queries``
    of its queries, their relevant documents, each one's ``distractors`` nearest other documents (by ``nearest``)
    rank by rank, then a random fill up to ``max_corpus``. The interim evaluations (``evaluation.interim_*``)
    measure on it."""
    rng = random.Random(seed + 2)
    picked = list(range(len(task.queries)))
    if max_queries is not None and len(picked) > max_queries:
        picked = sorted(rng.sample(picked, max_queries))
    docs = list(range(len(task.corpus)))
    if max_corpus is not None and len(docs) > max_corpus:
        needed = {d for q in picked for d in task.relevant[q]}
        queries = [task.queries[q] for q in picked]
        docs = sorted(_corpus_sample(docs, needed, task.corpus.__getitem__, queries, max_corpus, distractors, nearest, random.Random(seed + 3)))
    index = {d: i for i, d in enumerate(docs)}
    return RetrievalTask(
        queries=[task.queries[q] for q in picked],
        corpus=[task.corpus[d] for d in docs],
        relevant=[frozenset(index[d] for d in task.relevant[q]) for q in picked],
    )


def read_query_file(path: str | Path, corpus: dict[str, str]) -> RetrievalTask:
    """Queries for ``autoembed evaluate``: rows use ``doc_id`` into the corpus, or ``positive`` text matched exactly."""
    path = Path(path)
    ids = list(corpus)
    by_id = {d: i for i, d in enumerate(ids)}
    by_text: dict[str, int] = {}
    for i, d in enumerate(ids):
        by_text.setdefault(corpus[d], i)
    rel: dict[str, set[int]] = {}
    for line, record in _read(path, "queries"):
        key = "query" if "query" in record else ("anchor" if "anchor" in record else "text1")
        query = _text(record, key, path, line)
        doc_id = record.get("doc_id")
        if doc_id is not None:
            doc_id = str(doc_id)
            if doc_id not in by_id:
                raise AutoembedError(f"unknown doc_id {doc_id!r}: not in the corpus", file=str(path), line=line, key="doc_id")
            target = by_id[doc_id]
        else:
            positive = _text(record, "text2" if "text2" in record else "positive", path, line)
            if positive not in by_text:
                raise AutoembedError(f"positive text matches no corpus text exactly: {positive[:60]!r}", file=str(path), line=line, key="positive")
            target = by_text[positive]
        rel.setdefault(query, set()).add(target)
    queries = list(rel)
    return RetrievalTask(queries=queries, corpus=[corpus[d] for d in ids], relevant=[frozenset(rel[q]) for q in queries])

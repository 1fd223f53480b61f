"""ICD-10-CM term normalization: find the code description that an inclusion term belongs to.

The data comes from the tabular list bundled with ``simple_icd_10_cm``. Every category and subcategory
of the tabular list (46,881 codes in the April 2026 release) is one corpus document whose text is the
code's description. Chapters and blocks are left out (they are ranges, not codes), and so are the
seventh-character extensions that the package generates (51,305 of them), whose descriptions only
append a suffix such as ", initial encounter" to their parent's and have no inclusion terms of their own.

Each inclusion term of a code is a query whose positive is that code's description. Codes, not rows,
are split into train/val/test (about 70/10/20) by hashing the code with the seed, so no code's terms
are on two sides of a split.

``extra_train.jsonl`` holds pairs that only train (``data.extra_train``), taken from the rest of the tabular list:
the terms of a code's "includes" notes (index-like terms), the terms of every "excludes" note that names one code
(``acute appendicitis (K35.-)`` -> K35), and the description of a code's first 7th-character extension (``...,
initial encounter``). Only codes of the train split are targets, and a term that is a validation or test query
is dropped and counted in the manifest, so nothing in it is measured.

Usage::

    python -m autoembed.examples.icd10 -o data/icd10 [--seed 0] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

from autoembed.fileio import atomic_write_json, atomic_write_text, sha256_file

__all__ = ["FRACTIONS", "SPLITS", "build_icd10", "extra_train_rows", "load_icd10_codes", "load_icd10_notes", "main", "split_of"]

TASK = "icd10cm-term-normalization"
# Bump when the rows or the manifest change shape, so existing outputs are rebuilt.
FORMAT_VERSION = 2
SOURCE_PACKAGE = "simple-icd-10-cm"
SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
CORPUS_FILE = "corpus.jsonl"
MANIFEST_FILE = "manifest.json"
SPLIT_FILES = {split: f"{split}.jsonl" for split in SPLITS}
EXTRA_FILE = "extra_train.jsonl"
# "term (K35.-)" or "term (P70.2)": an excludes note naming one code (ranges like "(I60-I69)" name none)
_NOTE_CODE = re.compile(r"^(?P<term>.+?)\s*\((?P<code>[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?)\.?-?\)$")
CODES_INCLUDED = "categories and subcategories of the tabular list; no chapters, blocks or 7th-character extensions"


def split_of(code: str, seed: int) -> str:
    """The split a code belongs to: a fixed function of the seed and the code alone."""
    digest = hashlib.sha256(f"{seed}:{code}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    if fraction < FRACTIONS["train"]:
        return "train"
    if fraction < FRACTIONS["train"] + FRACTIONS["val"]:
        return "val"
    return "test"


def load_icd10_codes() -> list[tuple[str, str, list[str]]]:
    """Every category and subcategory as ``(code, description, inclusion terms)``, in tabular order."""
    # Importing the package parses its XML (about 2 s), so only a rebuild pays for it.
    import simple_icd_10_cm as cm

    codes = []
    # get_all_codes() lists a code twice when a block holds a single category of the same name (B99, C7A, ...).
    for code in dict.fromkeys(cm.get_all_codes()):
        if cm.is_category(code) or cm.is_subcategory(code, include_extended_subcategories=False):
            codes.append((code, cm.get_description(code), cm.get_inclusion_term(code)))
    return codes


def load_icd10_notes() -> list[tuple[str, list[str], list[str], str | None]]:
    """Every corpus code as ``(code, includes terms, excludes1 + excludes2 terms, first 7th-character extension's
    description or None)``, in tabular order."""
    import simple_icd_10_cm as cm

    notes = []
    for code in dict.fromkeys(cm.get_all_codes()):
        if cm.is_category(code) or cm.is_subcategory(code, include_extended_subcategories=False):
            extensions = [c for c in cm.get_children(code) if cm.is_extended_subcategory(c)]
            first = cm.get_description(extensions[0]) if extensions else None
            notes.append((code, list(cm.get_includes(code)), [*cm.get_excludes1(code), *cm.get_excludes2(code)], first))
    return notes


def extra_train_rows(
    notes: list[tuple[str, list[str], list[str], str | None]], descriptions: dict[str, str], seed: int, held_out: set[str]
) -> tuple[list[dict[str, str]], int]:
    """Training-only pairs from the notes (see the module docstring), and how many were dropped as held-out queries.

    A pair's code must be a corpus code of the train split; ``held_out`` are the validation and test queries.
    """
    rows: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    dropped = 0

    def add(term: str, code: str, source: str) -> None:
        nonlocal dropped
        term = " ".join(term.split())
        if code not in descriptions or split_of(code, seed) != "train" or not term:
            return
        if term.casefold() == descriptions[code].casefold() or (term, code) in seen:
            return
        if term in held_out:
            dropped += 1
            return
        seen.add((term, code))
        rows.append({"query": term, "positive": descriptions[code], "doc_id": code, "source": source})

    for code, includes, excludes, extension in notes:
        for term in includes:
            add(term, code, "includes")
        for note in excludes:
            match = _NOTE_CODE.match(" ".join(note.split()))
            if match:
                add(match["term"], match["code"], "excludes")
        if extension:
            add(extension, code, "extension")
    return rows, dropped


def _source() -> dict[str, str]:
    return {"package": SOURCE_PACKAGE, "version": version(SOURCE_PACKAGE)}


def _jsonl(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _current_manifest(out: Path, seed: int, source: dict[str, str]) -> dict[str, Any] | None:
    """The manifest in ``out`` if it was built the same way and its files are intact, else None."""
    try:
        manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    wanted = {"task": TASK, "format_version": FORMAT_VERSION, "seed": seed, "source": source}
    if any(manifest.get(key) != value for key, value in wanted.items()):
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {"corpus", *SPLITS, "extra_train"}:
        return None
    for entry in files.values():
        path = out / entry.get("path", "")
        if not path.is_file() or sha256_file(path) != entry.get("sha256"):
            return None
    return manifest


def _build(out_dir: str | Path, seed: int, force: bool) -> tuple[dict[str, Any], bool]:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"The 'seed' parameter of build_icd10 must be an int. Got {seed!r} instead.")
    out = Path(out_dir)
    source = _source()
    if not force:
        manifest = _current_manifest(out, seed, source)
        if manifest is not None:
            return manifest, False

    corpus: list[dict[str, str]] = []
    rows: dict[str, list[dict[str, str]]] = {split: [] for split in SPLITS}
    codes_per_split = dict.fromkeys(SPLITS, 0)
    for code, description, terms in load_icd10_codes():
        corpus.append({"_id": code, "text": description})
        split = split_of(code, seed)
        codes_per_split[split] += 1
        seen: set[str] = set()
        for raw in terms:
            # A few terms carry doubled or trailing spaces in the XML.
            term = " ".join(raw.split())
            if not term or term.casefold() == description.casefold() or term in seen:
                continue
            seen.add(term)
            rows[split].append({"query": term, "positive": description, "doc_id": code})

    descriptions = {row["_id"]: row["text"] for row in corpus}
    held_out = {row["query"] for split in ("val", "test") for row in rows[split]}
    extra, dropped = extra_train_rows(load_icd10_notes(), descriptions, seed, held_out)

    out.mkdir(parents=True, exist_ok=True)
    # The manifest goes first and comes back last: a rebuild cut short leaves no manifest, so the next run
    # rebuilds instead of trusting a mix of old and new files.
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    files = {"corpus": (CORPUS_FILE, corpus), **{split: (SPLIT_FILES[split], rows[split]) for split in SPLITS}, "extra_train": (EXTRA_FILE, extra)}
    for name, records in files.values():
        atomic_write_text(out / name, _jsonl(records))
    manifest = {
        "task": TASK,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "source": source,
        "codes_included": CODES_INCLUDED,
        "fractions": FRACTIONS,
        "counts": {key: len(records) for key, (_, records) in files.items()},
        "codes_per_split": codes_per_split,
        "extra_train_dropped_as_held_out_queries": dropped,
        "files": {key: {"path": name, "sha256": sha256_file(out / name)} for key, (name, _) in files.items()},
    }
    atomic_write_json(out / MANIFEST_FILE, manifest)
    return manifest, True


def build_icd10(out_dir: str | Path, seed: int = 0, force: bool = False) -> dict[str, Any]:
    """Write the ICD-10-CM term-normalization task to ``out_dir`` and return its manifest.

    Writes ``corpus.jsonl`` (``{"_id", "text"}``), ``train.jsonl``, ``val.jsonl`` and ``test.jsonl``
    (``{"query", "positive", "doc_id"}``) and ``manifest.json``. Each file is written whole or not at all.

    Args:
        out_dir: Folder to write into; created if missing.
        seed: Seed of the code-level split.
        force: Rebuild even when ``out_dir`` already holds intact files built with the same seed and source.

    Returns:
        The manifest: seed, source package version, row counts per file, codes per split, file hashes.
    """
    manifest, _ = _build(out_dir, seed, force)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autoembed.examples.icd10",
        description="Build the ICD-10-CM term-normalization task (inclusion term -> code description).",
    )
    parser.add_argument("-o", "--out-dir", required=True, type=Path, help="folder to write the JSONL files to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the code-level train/val/test split")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    args = parser.parse_args(argv)

    manifest, rebuilt = _build(args.out_dir, args.seed, args.force)
    source = manifest["source"]
    state = "built" if rebuilt else "up to date, not rebuilt"
    print(
        f"ICD-10-CM term normalization from {source['package']} {source['version']}, seed {manifest['seed']}: {state}"
    )
    counts, codes = manifest["counts"], manifest["codes_per_split"]
    print(f"  corpus {counts['corpus']:>6} documents  {args.out_dir / CORPUS_FILE}")
    for split in SPLITS:
        print(f"  {split:<6} {counts[split]:>6} queries    {args.out_dir / SPLIT_FILES[split]}  ({codes[split]} codes)")
    print(f"  extra  {counts['extra_train']:>6} pairs      {args.out_dir / EXTRA_FILE}  (train only: data.extra_train)")
    print(f"  manifest                  {args.out_dir / MANIFEST_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

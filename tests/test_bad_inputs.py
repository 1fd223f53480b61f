"""Bad input and faults of the machine, across all six commands: each is one line on stderr naming the file, key or
value, exit 2 (bad input) or 1 (the machine refused: read-only folder, full disk, read-only or full database),
no traceback, nothing on stdout, and nothing half-written.

Most cases run in-process through typer's CliRunner (fast); the faults of the machine and a few others run as real
processes: a read-only folder is a read-only bind mount in a private mount namespace (as root, where chmod does not
stop writes) or a chmod (otherwise); a full disk is a file-size limit (RLIMIT_FSIZE), so writes fail partway.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

import autoembed
from autoembed.cli import app
from autoembed.config import TrialConfig
from autoembed.provenance import data_provenance, model_provenance
from autoembed.recipe import export_recipe

runner = CliRunner()
ROOT = Path(autoembed.__file__).resolve().parents[1]
SPACE = """\
metric: recall@1
params:
  backbone_lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
fixed: {training.max_steps: 2, training.batch_size: 8, evaluation.every_steps: 1, data.max_seq_length: 16}
pruner: {type: none}
sampler: {type: random}
"""
# what a search may print on stderr before its error line (its own progress notes)
# what a search says on stderr before anything can go wrong with the study: these lines may precede the error
SEARCH_NOTES = (
    "reading data and tokenizing once", "joining study", "starting Ray", "connecting to Ray", "planning the budget",
    "no --timeout:", "warning: only",
)  # fmt: skip


@dataclass
class World:
    """What the cases share: the tiny model, toy data, a good config, a study with one COMPLETE and one FAIL
    trial, and a recipe exported from it."""

    root: Path
    model: Path
    nowts: Path  # config.json and tokenizer, no weights
    train: Path
    val: Path
    corpus: Path
    space: Path
    db: Path
    recipe: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    def config(self, **dotted) -> dict:
        data = {
            "model": str(self.model),
            "data": {"train": str(self.train), "val": str(self.val), "corpus": str(self.corpus), "max_seq_length": 16},
            "training": {"batch_size": 8, "max_steps": 2, "device": "cpu"},
            "evaluation": {"metric": "recall@1", "every_steps": 2},
        }
        for key, value in dotted.items():
            *parents, last = key.split(".")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            if value is DROP:
                node.pop(last, None)
            else:
                node[last] = value
        return data

    def search(self, *extra: str, study: str = "x") -> list[str]:
        args = ["search", "--model", str(self.model), "--train", str(self.train), "--val", str(self.val), "--corpus", str(self.corpus)]
        return [*args, "--space", str(self.space), "--study", study, "--executor", "inline", "--trials", "1", *extra]


DROP = object()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model, toy_data) -> World:
    root = tmp_path_factory.mktemp("world")
    nowts = root / "nowts"
    shutil.copytree(tiny_model, nowts)
    for weights in [*nowts.glob("*.safetensors"), *nowts.glob("*.bin")]:
        weights.unlink()
    (root / "space.yaml").write_text(SPACE)
    w = World(root, tiny_model, nowts, toy_data["train"], toy_data["val"], toy_data["corpus"], root / "space.yaml", root / "s.db", root / "recipe.yaml")
    config = TrialConfig.from_dict(w.config())
    study = optuna.create_study(study_name="s", storage=w.url, direction="maximize")
    study.set_user_attr("objective", "recall@1")
    study.set_user_attr("provenance", {"base_model": model_provenance(str(tiny_model)), "data": data_provenance(config)})
    trial = study.ask()
    trial.set_user_attr("config", config.to_dict())
    trial.report(0.5, 2)
    study.tell(trial, 0.5)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    export_recipe("s", w.url, w.recipe)
    return w


def put(folder: Path, name: str, content: str | bytes) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def rows(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def config_file(w: World, tmp: Path, **dotted) -> str:
    return put(tmp, "config.yaml", yaml.safe_dump(w.config(**dotted)))


def train_on(w: World, tmp: Path, name: str, content: str | bytes, role: str = "train", **dotted) -> list[str]:
    """``train`` with one data file replaced by ``content``."""
    path = put(tmp, name, content)
    return ["train", config_file(w, tmp, **{f"data.{role}": path, **dotted}), "-o", str(tmp / "out")]


def recipe_with(w: World, tmp: Path, edit: Callable[[dict, Path], None]) -> list[str]:
    data = yaml.safe_load(w.recipe.read_text())
    edit(data, tmp)
    return ["train", put(tmp, "recipe.yaml", yaml.safe_dump(data)), "-o", str(tmp / "out")]


def evaluate(w: World, tmp: Path, model=None, queries=None, corpus=None, *extra: str) -> list[str]:
    return ["evaluate", str(model or w.model), "--queries", str(queries or w.val), "--corpus", str(corpus or w.corpus), *extra]


def study_yaml(w: World, tmp: Path, text: str) -> list[str]:
    base = f"model: {w.model}\ntrain: {w.train}\nval: {w.val}\ncorpus: {w.corpus}\nspace: {w.space}\nexecutor: inline\n"
    return ["search", put(tmp, "study.yaml", base + text)]


COMMANDS = ("train", "recipe", "evaluate", "search", "status", "export", "dashboard")  # recipe-*: train from a recipe


@dataclass
class Case:
    name: str
    argv: Callable[[World, Path], list[str]]
    needles: tuple[str, ...]  # each must be in the error line; {tmp} is the case's folder
    code: int = 2
    how: str = "runner"  # runner (in-process), process, readonly (the folder `ro` read-only), fsize (writes capped)
    fsize: int = 0
    marks: tuple = ()
    allow: tuple[str, ...] = ()  # paths (relative to the case's folder) the case may leave, e.g. an input it copied
    notes: tuple[str, ...] = ()  # autoembed's own progress lines that may come before the error (a fault after training)


BAD_UTF8 = b'{"query": "caf\xe9", "positive": "acute pain"}\n'
GOOD_ROW = {"query": "left arm", "positive": "arm pain", "doc_id": "d0"}

CASES = [
    # ---- train: the config file
    Case("train-config-missing", lambda w, t: ["train", str(t / "nope.yaml"), "-o", str(t / "out")], ("{tmp}/nope.yaml: file not found",)),
    Case("train-config-bad-yaml", lambda w, t: ["train", put(t, "c.yaml", "model: [unclosed\n"), "-o", str(t / "out")], ("c.yaml:2: invalid YAML",)),
    Case("train-config-empty", lambda w, t: ["train", put(t, "c.yaml", ""), "-o", str(t / "out")], ("c.yaml: file is empty",)),
    Case("train-config-list", lambda w, t: ["train", put(t, "c.yaml", "- 1\n- 2\n"), "-o", str(t / "out")], ("c.yaml:1: expected a mapping",)),
    Case("train-config-unsafe-tag", lambda w, t: ["train", put(t, "c.yaml", "model: ok\ntraining: !!python/object:os.system x\n"), "-o", str(t / "out")], ("c.yaml:2", "invalid YAML", "python/object")),
    Case("train-config-not-utf8", lambda w, t: ["train", put(t, "c.yaml", b"model: caf\xe9\n"), "-o", str(t / "out")], ("c.yaml", "UTF-8")),
    Case("train-unknown-top-key", lambda w, t: ["train", config_file(w, t, extra=1), "-o", str(t / "out")], ("config.yaml", "extra", "unknown key")),
    Case("train-unknown-training-key", lambda w, t: ["train", config_file(w, t, **{"training.lr": 1}), "-o", str(t / "out")], ("training.lr", "unknown key 'lr'")),
    Case("train-batch-size-string", lambda w, t: ["train", config_file(w, t, **{"training.batch_size": "big"}), "-o", str(t / "out")], ("training.batch_size", "'big'")),
    Case("train-batch-size-zero", lambda w, t: ["train", config_file(w, t, **{"training.batch_size": 0}), "-o", str(t / "out")], ("training.batch_size", "got 0")),
    Case("train-model-int", lambda w, t: ["train", config_file(w, t, model=5), "-o", str(t / "out")], ("model", "got 5")),
    Case("train-model-missing", lambda w, t: ["train", config_file(w, t, model=str(t / "nomodel")), "-o", str(t / "out")], ("model", "nomodel", "no such folder")),
    Case("train-model-no-weights", lambda w, t: ["train", config_file(w, t, model=str(w.nowts)), "-o", str(t / "out")], ("model", "nowts", "no weights")),
    Case("train-model-no-config", lambda w, t: ["train", config_file(w, t, model=str(t)), "-o", str(t / "out")], ("model", "neither config.json nor modules.json")),
    Case("train-model-bad-modules-json", lambda w, t: ["train", config_file(w, t, model=str(Path(put(t, "m/modules.json", "{oops")).parent)), "-o", str(t / "out")], ("modules.json", "module list")),
    Case("train-max-seq-length-string", lambda w, t: ["train", config_file(w, t, **{"data.max_seq_length": "long"}), "-o", str(t / "out")], ("data.max_seq_length", "'long'")),
    # ---- train: the data files
    Case("train-data-missing", lambda w, t: ["train", config_file(w, t, **{"data.train": str(t / "no.jsonl")}), "-o", str(t / "out")], ("{tmp}/no.jsonl", "not found")),
    Case("train-data-txt", lambda w, t: train_on(w, t, "d.txt", "x\n"), ("d.txt", "unsupported file type '.txt'")),
    Case("train-data-not-utf8", lambda w, t: train_on(w, t, "d.jsonl", rows(GOOD_ROW).encode() + BAD_UTF8), ("d.jsonl:2", "not UTF-8", "\\xe9")),
    Case("train-data-duplicate-key", lambda w, t: train_on(w, t, "d.jsonl", '{"query": "a", "query": "b", "positive": "c"}\n'), ("d.jsonl:1", "duplicate key 'query'")),
    Case("train-data-bad-json", lambda w, t: train_on(w, t, "d.jsonl", rows(GOOD_ROW) + '{"query": \n'), ("d.jsonl:2", "invalid JSON")),
    Case("train-data-row-list", lambda w, t: train_on(w, t, "d.jsonl", "[1, 2]\n"), ("d.jsonl:1", "expected a JSON object, got list")),
    Case("train-data-missing-positive", lambda w, t: train_on(w, t, "d.jsonl", rows({"query": "a"})), ("d.jsonl:1", "positive", "missing field")),
    Case("train-data-positive-int", lambda w, t: train_on(w, t, "d.jsonl", rows({"query": "a", "positive": 7})), ("d.jsonl:1", "positive", "int 7")),
    Case("train-data-empty", lambda w, t: train_on(w, t, "d.jsonl", "\n\n"), ("d.jsonl", "data file is empty")),
    Case("train-data-deep-json", lambda w, t: train_on(w, t, "d.jsonl", "[" * 100_000 + "\n"), ("d.jsonl:1", "nested too deeply")),
    Case("train-data-unknown-doc-id", lambda w, t: train_on(w, t, "d.jsonl", rows({"query": "a", "doc_id": "zz"})), ("d.jsonl:1", "doc_id", "'zz'")),
    Case("train-data-doc-id-no-corpus", lambda w, t: train_on(w, t, "d.jsonl", rows(GOOD_ROW), **{"data.corpus": DROP}), ("d.jsonl:1", "no corpus file")),
    Case("train-data-label-2", lambda w, t: train_on(w, t, "d.jsonl", rows({"text1": "a", "text2": "b", "label": 2})), ("d.jsonl:1", "label", "got 2")),
    Case("train-data-negative-empty", lambda w, t: train_on(w, t, "d.jsonl", rows({"query": "a", "positive": "b", "negative": []})), ("d.jsonl:1", "negative", "[]")),
    Case("train-csv-extra-field", lambda w, t: train_on(w, t, "d.csv", "query,positive\na,b,c\n"), ("d.csv:2", "more fields than the header")),
    Case("train-csv-not-utf8", lambda w, t: train_on(w, t, "d.csv", b"query,positive\nleft arm,arm pain\ncaf\xe9,x\n"), ("d.csv:3", "not UTF-8")),
    Case("train-csv-duplicate-column", lambda w, t: train_on(w, t, "d.csv", "query,query,positive\na,b,c\n"), ("d.csv:1", "duplicate column 'query'")),
    Case("train-corpus-duplicate-id", lambda w, t: train_on(w, t, "c.jsonl", rows({"_id": "d0", "text": "a"}, {"_id": "d0", "text": "b"}), role="corpus"), ("c.jsonl:2", "duplicate _id 'd0'")),
    Case("train-corpus-not-utf8", lambda w, t: train_on(w, t, "c.jsonl", b'{"_id": "d0", "text": "\xff"}\n', role="corpus"), ("c.jsonl:1", "not UTF-8")),
    # ---- train: the output folder, refused before training
    Case("train-out-is-file", lambda w, t: ["train", config_file(w, t), "-o", put(t, "out", "x")], ("{tmp}/out", "not a folder")),
    Case("train-out-under-file", lambda w, t: ["train", config_file(w, t), "-o", str(Path(put(t, "f", "x")) / "out")], ("{tmp}/f/out", "{tmp}/f is a file")),
    Case("train-out-not-empty", lambda w, t: ["train", config_file(w, t), "-o", str(Path(put(t, "out/notes.txt", "mine")).parent)], ("{tmp}/out", "not empty")),
    # ---- train: recipes whose data no longer matches
    Case("recipe-train-path-edited", lambda w, t: recipe_with(w, t, lambda d, t: d["data"].update(train=put(t, "other.jsonl", rows(GOOD_ROW)))), ("recipe.yaml", "provenance.data", "other.jsonl", "--allow-changed-data")),
    Case("recipe-data-changed", lambda w, t: recipe_with(w, t, lambda d, t: d["data"].update(train=put(t, "copy.jsonl", w.train.read_text() + rows(GOOD_ROW)))), ("provenance.data", "data.train", "changed")),
    Case("recipe-val-dropped", lambda w, t: recipe_with(w, t, lambda d, t: d["data"].pop("val")), ("provenance.data", "data.val is not set")),
    Case("recipe-provenance-data-list", lambda w, t: recipe_with(w, t, lambda d, t: d["provenance"].update(data=[1])), ("recipe.yaml", "provenance.data", "[1]")),
    Case("recipe-provenance-list", lambda w, t: recipe_with(w, t, lambda d, t: d.update(provenance=[1])), ("recipe.yaml", "provenance", "must be a mapping")),
    # ---- evaluate
    Case("evaluate-model-missing", lambda w, t: evaluate(w, t, t / "nomodel"), ("model", "no such folder")),
    Case("evaluate-model-no-weights", lambda w, t: evaluate(w, t, w.nowts), ("nowts", "no weights")),
    Case("evaluate-model-bad-modules-json", lambda w, t: evaluate(w, t, Path(put(t, "m/modules.json", "[1]")).parent), ("modules.json", "module list")),
    Case("evaluate-queries-missing", lambda w, t: evaluate(w, t, None, t / "q.jsonl"), ("{tmp}/q.jsonl", "queries file not found")),
    Case("evaluate-corpus-missing", lambda w, t: evaluate(w, t, None, None, t / "c.jsonl"), ("{tmp}/c.jsonl", "corpus file not found")),
    Case("evaluate-queries-not-utf8", lambda w, t: evaluate(w, t, None, put(t, "q.jsonl", BAD_UTF8)), ("q.jsonl:1", "not UTF-8")),
    Case("evaluate-queries-duplicate-key", lambda w, t: evaluate(w, t, None, put(t, "q.jsonl", '{"query": "a", "doc_id": "d0", "doc_id": "d1"}\n')), ("q.jsonl:1", "duplicate key 'doc_id'")),
    Case("evaluate-queries-unknown-doc", lambda w, t: evaluate(w, t, None, put(t, "q.jsonl", rows({"query": "a", "doc_id": "zz"}))), ("q.jsonl:1", "doc_id", "'zz'")),
    Case("evaluate-queries-txt", lambda w, t: evaluate(w, t, None, put(t, "q.txt", "a\n")), ("q.txt", "unsupported file type")),
    Case("evaluate-corpus-empty", lambda w, t: evaluate(w, t, None, None, put(t, "c.jsonl", "")), ("c.jsonl", "corpus file is empty")),
    Case("evaluate-corpus-no-text", lambda w, t: evaluate(w, t, None, None, put(t, "c.jsonl", rows({"_id": "d0"}))), ("c.jsonl:1", "text", "missing field")),
    Case("evaluate-corpus-duplicate-key", lambda w, t: evaluate(w, t, None, None, put(t, "c.jsonl", '{"_id": "d0", "text": "a", "text": "b"}\n')), ("c.jsonl:1", "duplicate key 'text'")),
    Case("evaluate-k-letters", lambda w, t: evaluate(w, t, None, None, None, "--k", "a,b"), ("--k", "'a,b'")),
    Case("evaluate-k-zero", lambda w, t: evaluate(w, t, None, None, None, "--k", "0"), ("--k", "'0'")),
    # ---- search: flags and the study YAML (all refused before any study exists)
    Case("search-no-model", lambda w, t: ["search", "--train", str(w.train), "--study", "x"], ("--model is required",)),
    Case("search-no-train", lambda w, t: ["search", "--model", str(w.model), "--study", "x"], ("--train is required",)),
    Case("search-bad-study-name", lambda w, t: w.search(study="bad name!"), ("study", "'bad name!'")),
    Case("search-bad-executor", lambda w, t: w.search("--executor", "slurm"), ("executor", "'slurm'")),
    Case("search-yaml-gpus-lots", lambda w, t: study_yaml(w, t, "gpus_per_trial: lots\n"), ("study.yaml", "gpus_per_trial", "'lots'")),
    Case("search-yaml-trials-string", lambda w, t: study_yaml(w, t, "trials: '5'\n"), ("study.yaml", "trials", "'5'")),
    Case("search-yaml-seed-string", lambda w, t: study_yaml(w, t, "seed: x\n"), ("study.yaml", "seed", "'x'")),
    Case("search-yaml-workers-zero", lambda w, t: study_yaml(w, t, "workers: 0\n"), ("study.yaml", "workers", "got 0")),
    Case("search-yaml-model-int", lambda w, t: ["search", put(t, "study.yaml", f"model: 5\ntrain: {w.train}\n")], ("study.yaml", "model", "got 5")),
    Case("search-yaml-storage-list", lambda w, t: study_yaml(w, t, "storage: [1]\n"), ("study.yaml", "storage", "[1]")),
    Case("search-yaml-unknown-key", lambda w, t: study_yaml(w, t, "trails: 5\n"), ("study.yaml", "trails", "unknown key")),
    Case("search-yaml-bad-yaml", lambda w, t: ["search", put(t, "study.yaml", "model: [\n")], ("study.yaml", "invalid YAML")),
    Case("search-yaml-base-int", lambda w, t: study_yaml(w, t, "base: 5\n"), ("study.yaml", "base", "mapping")),
    Case("search-storage-bad-driver", lambda w, t: w.search("--storage", "nosuchdb://x/y"), ("storage", "nosuchdb://x/y")),
    # ---- search: the space, the model and the data (refused before the study is created)
    Case("search-space-missing", lambda w, t: w.search("--space", str(t / "no.yaml")), ("{tmp}/no.yaml", "file not found")),
    Case("search-space-bad-yaml", lambda w, t: w.search("--space", put(t, "sp.yaml", "params: {\n")), ("sp.yaml", "invalid YAML")),
    Case("search-space-params-list", lambda w, t: w.search("--space", put(t, "sp.yaml", "params: [1, 2]\n")), ("sp.yaml", "params")),
    Case("search-space-param-int", lambda w, t: w.search("--space", put(t, "sp.yaml", "params:\n  backbone_lr: 5\n")), ("sp.yaml", "backbone_lr")),
    Case("search-space-fixed-int", lambda w, t: w.search("--space", put(t, "sp.yaml", "fixed: 5\n")), ("sp.yaml", "fixed")),
    Case("search-model-no-weights", lambda w, t: w.search("--model", str(w.nowts)), ("model", "no weights")),
    Case("search-train-not-utf8", lambda w, t: w.search("--train", put(t, "d.jsonl", BAD_UTF8)), ("d.jsonl:1", "not UTF-8")),
    Case("search-train-duplicate-key", lambda w, t: w.search("--train", put(t, "d.jsonl", '{"query": "a", "positive": "b", "positive": "c"}\n')), ("d.jsonl:1", "duplicate key 'positive'")),
    # ---- status
    Case("status-no-db", lambda w, t: ["status", "s", "--storage", f"sqlite:///{t}/none.db"], ("study", "none.db", "does not exist")),
    Case("status-no-study", lambda w, t: ["status", "nope", "--storage", w.url], ("study", "no study 'nope'", "it holds: s")),
    Case("status-not-a-database", lambda w, t: ["status", "s", "--storage", f"sqlite:///{put(t, 'junk.db', 'not sqlite ' * 200)}"], ("storage", "junk.db")),
    Case("status-bad-driver", lambda w, t: ["status", "s", "--storage", "nosuchdb://x/y"], ("storage", "nosuchdb://x/y")),
    # ---- export
    Case("export-out-is-folder", lambda w, t: ["export", "s", "--storage", w.url, "-o", str(t)], ("{tmp}", "is a folder")),
    Case("export-out-under-file", lambda w, t: ["export", "s", "--storage", w.url, "-o", str(Path(put(t, "f", "x")) / "r.yaml")], ("{tmp}/f/r.yaml", "is a file")),
    Case("export-no-such-trial", lambda w, t: ["export", "s", "--storage", w.url, "--trial", "99", "-o", str(t / "r.yaml")], ("--trial", "no trial 99")),
    Case("export-failed-trial", lambda w, t: ["export", "s", "--storage", w.url, "--trial", "1", "-o", str(t / "r.yaml")], ("--trial", "trial 1 is FAIL")),
    Case("export-no-study", lambda w, t: ["export", "nope", "--storage", w.url, "-o", str(t / "r.yaml")], ("study", "no study 'nope'")),
    Case("export-not-a-database", lambda w, t: ["export", "s", "--storage", f"sqlite:///{put(t, 'junk.db', 'x' * 500)}", "-o", str(t / "r.yaml")], ("storage", "junk.db")),
    # ---- dashboard
    Case("dashboard-no-study", lambda w, t: ["dashboard", "nope", "--storage", w.url, "-o", str(t / "d.html")], ("study", "no study 'nope'")),
    Case("dashboard-no-db", lambda w, t: ["dashboard", "s", "--storage", f"sqlite:///{t}/none.db", "-o", str(t / "d.html")], ("none.db",)),
    Case("dashboard-out-is-folder", lambda w, t: ["dashboard", "s", "--storage", w.url, "-o", str(t)], ("{tmp}", "is a folder")),
    Case("dashboard-out-under-file", lambda w, t: ["dashboard", "s", "--storage", w.url, "-o", str(Path(put(t, "f", "x")) / "d.html")], ("{tmp}/f/d.html", "is a file")),
    Case("dashboard-not-a-database", lambda w, t: ["dashboard", "s", "--storage", f"sqlite:///{put(t, 'junk.db', 'x' * 500)}", "-o", str(t / "d.html")], ("junk.db",)),
    # ---- real processes: the entry point itself, and faults of the machine (exit 1)
    Case("process-train-data-not-utf8", lambda w, t: train_on(w, t, "d.jsonl", BAD_UTF8), ("d.jsonl:1", "not UTF-8"), how="process"),
    Case("process-search-yaml-gpus-lots", lambda w, t: study_yaml(w, t, "gpus_per_trial: lots\n"), ("gpus_per_trial", "'lots'"), how="process"),
    Case("process-export-out-is-folder", lambda w, t: ["export", "s", "--storage", w.url, "-o", str(t)], ("is a folder",), how="process"),
    Case("readonly-train-out", lambda w, t: ["train", config_file(w, t), "-o", str(t / "ro" / "model")], ("{tmp}/ro", "cannot make the output folder", "Read-only file system|Permission denied"), code=1, how="readonly"),
    Case("readonly-export-out", lambda w, t: ["export", "s", "--storage", w.url, "-o", str(t / "ro" / "r.yaml")], ("{tmp}/ro", "cannot write"), code=1, how="readonly"),
    Case("readonly-dashboard-out", lambda w, t: ["dashboard", "s", "--storage", w.url, "-o", str(t / "ro" / "d.html")], ("{tmp}/ro", "cannot write"), code=1, how="readonly"),
    Case("readonly-search-study-db", lambda w, t: shutil.copy(w.db, t / "ro" / "s.db") and w.search("--storage", f"sqlite:///{t}/ro/s.db", study="s"), ("storage", "s.db", "readonly database"), code=1, how="readonly", allow=("ro/s.db",)),
    Case("full-disk-export", lambda w, t: ["export", "s", "--storage", w.url, "-o", str(t / "r.yaml")], ("r.yaml", "cannot write", "File too large"), code=1, how="fsize", fsize=256),
    Case("full-disk-dashboard", lambda w, t: ["dashboard", "s", "--storage", w.url, "-o", str(t / "d.html")], ("d.html", "cannot write", "File too large"), code=1, how="fsize", fsize=4096),
    Case("full-disk-train", lambda w, t: ["train", config_file(w, t), "-o", str(t / "model")], ("{tmp}/model", "File too large"), code=1, how="fsize", fsize=32 * 1024, notes=("training seed",)),
    Case("full-search-study-db", lambda w, t: shutil.copy(w.db, t / "s.db") and w.search("--storage", f"sqlite:///{t}/s.db", "--trials", "3", study="s"), ("storage", "s.db"), code=1, how="fsize", fsize=8192, allow=("s.db",)),
]


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            if "__pycache__" in path.parts:
                continue
            st = path.lstat()
            out[str(path)] = (st.st_size if path.is_file() else -1, st.st_mode)
    return out


def readonly_prefix(folder: Path) -> list[str]:
    """A command prefix that runs the rest with ``folder`` read-only; chmod suffices unless we are root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("root without mount namespaces: no way to make a folder read-only for this process")
    return ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder)]


def run_process(case: Case, argv: list[str], tmp: Path) -> tuple[int, str, str]:
    env = {**os.environ, "COLUMNS": "40", "PYTHONWARNINGS": "ignore", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
    prefix: list[str] = []
    limit = case.fsize if case.how == "fsize" else None  # no write may reach past this offset of any file
    if case.how == "readonly":
        prefix = readonly_prefix(tmp / "ro")

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([*prefix, sys.executable, "-m", "autoembed.cli", *argv], capture_output=True, text=True, cwd=tmp,
                          env=env, timeout=600, preexec_fn=cap)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name, marks=case.marks) for case in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case: Case, world: World, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a search's default studies/ folder would land here
    (tmp_path / "ro").mkdir()
    argv = case.argv(world, tmp_path)
    before = snapshot(tmp_path, world.root)
    try:
        if case.how == "runner":
            result = runner.invoke(app, argv)
            assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
            code, stdout, stderr = result.exit_code, result.stdout, result.stderr
        else:
            code, stdout, stderr = run_process(case, argv, tmp_path)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert "Traceback" not in stderr, stderr
    assert (code, stdout) == (case.code, ""), (code, stdout, stderr)
    lines = stderr.splitlines()
    notes = (*case.notes, *(SEARCH_NOTES if argv[0] == "search" else ()))
    assert lines and all(line.startswith(notes) for line in lines[:-1]), stderr  # the error is the last line
    error = lines[-1]
    assert error.startswith("autoembed: error: ")
    for needle in case.needles:
        options = needle.format(tmp=tmp_path).split("|")
        assert any(option in error for option in options), (needle, error)
    after = snapshot(tmp_path, world.root)
    allowed = {str(tmp_path / a) for a in case.allow}
    assert {p for p in after if p not in before} - allowed == set(), "left behind"
    assert {p for p in before if p not in after} == set(), "removed"
    assert {p: after[p] for p in before if p in after and after[p] != before[p] and p not in allowed} == {}, "changed"


def test_the_table_covers_all_six_commands_with_at_least_70_cases():
    commands = {next(w for w in case.name.split("-") if w in COMMANDS) for case in CASES}
    assert commands == set(COMMANDS)
    assert len(CASES) >= 70 and len({case.name for case in CASES}) == len(CASES)


def test_a_bad_output_folder_is_refused_before_any_training(world, tmp_path, monkeypatch):
    import autoembed.recipe
    import autoembed.runs

    def no_training(*args, **kwargs):
        raise AssertionError("trained before refusing the output folder")

    monkeypatch.setattr(autoembed.runs, "train", no_training)
    monkeypatch.setattr(autoembed.recipe, "train", no_training)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for seeds in ("1", "2"):  # extra seeds train first: the check must come before them too
        result = runner.invoke(app, ["train", config_file(world, tmp_path), "-o", str(out), "--seeds", seeds])
        assert result.exit_code == 2 and "not empty" in result.stderr, result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_a_trained_model_folder_follows_the_umask(world, tmp_path, umask):
    """tempfile makes owner-only folders; the result must have the modes a plain mkdir/open would give."""
    old = os.umask(umask)
    try:
        result = runner.invoke(app, ["train", config_file(world, tmp_path), "-o", str(tmp_path / "model")])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    modes = {p.relative_to(tmp_path): p.stat().st_mode & 0o777 for p in [tmp_path / "model", *(tmp_path / "model").rglob("*")]}
    assert any(p.suffix == ".safetensors" for p in modes)
    for path, mode in modes.items():
        expected = 0o777 & ~umask if (tmp_path / path).is_dir() else 0o666 & ~umask
        assert mode == expected, (str(path), oct(mode), oct(expected))

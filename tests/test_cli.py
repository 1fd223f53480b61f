"""The command line: train writes a loadable folder with metrics.json, evaluate prints one JSON object,
and every user error is one line on stderr with exit status 2."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autoembed.cli import app
from autoembed.evaluation import ranking_metrics
from autoembed.model import load_encoder

KEYS = ["recall@1", "recall@10", "mrr@10", "ndcg@10"]
runner = CliRunner()


@pytest.fixture(scope="module")
def hard_queries(tmp_path_factory, toy_data) -> dict[str, Path]:
    """Queries whose answers are random documents: metrics well below 1, so they tell models apart."""
    corpus = [json.loads(line) for line in toy_data["corpus"].read_text().splitlines()]
    rng = random.Random(1)
    words = sorted({w for doc in corpus for w in doc["text"].split()})
    rows = [(f"{rng.choice(words)} {rng.choice(words)}", rng.choice(corpus)) for _ in range(16)]
    rows = list({q: (q, doc) for q, doc in rows}.values())  # one answer per query text
    folder = tmp_path_factory.mktemp("hard")
    by_id = folder / "by_id.jsonl"
    by_text = folder / "by_text.jsonl"
    by_id.write_text("".join(json.dumps({"query": q, "doc_id": d["_id"]}) + "\n" for q, d in rows))
    by_text.write_text("".join(json.dumps({"query": q, "positive": d["text"]}) + "\n" for q, d in rows))
    return {"by_id": by_id, "by_text": by_text, "corpus": toy_data["corpus"]}


def write_config(path: Path, tiny_model: Path, toy_data, val: Path, extra: str = "") -> Path:
    path.write_text(
        f"model: {tiny_model}\n"
        f"data:\n  train: {toy_data['train']}\n  val: {val}\n  corpus: {toy_data['corpus']}\n"
        "training:\n  batch_size: 8\n  max_steps: 4\n  backbone_lr: 1.0e-3\n  device: cpu\n" + extra
    )
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, toy_data, hard_queries) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    config = write_config(folder / "config.yaml", tiny_model, toy_data, hard_queries["by_id"])
    result = runner.invoke(app, ["train", str(config), "-o", str(folder / "model")])
    assert result.exit_code == 0, result.stderr
    return folder / "model"


def brute_force_metrics(model, queries: Path, corpus: Path) -> dict[str, float]:
    """What evaluate should print, computed with sentence-transformers' own encode and a full sort."""
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    rows = [json.loads(line) for line in queries.read_text().splitlines()]
    index = {d["_id"]: i for i, d in enumerate(docs)}
    q = model.encode([r["query"] for r in rows], convert_to_tensor=True, normalize_embeddings=True)
    c = model.encode([d["text"] for d in docs], convert_to_tensor=True, normalize_embeddings=True)
    ranked = (q @ c.T).argsort(dim=1, descending=True)[:, :10]
    return ranking_metrics(ranked, [frozenset({index[r["doc_id"]]}) for r in rows], (1, 10))


def test_train_writes_a_folder_sentence_transformers_loads(trained, hard_queries):
    from sentence_transformers import SentenceTransformer

    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(KEYS) <= set(metrics)
    assert metrics["objective"] == "recall@10" and metrics["value"] == metrics["recall@10"] and metrics["step"] == 4
    assert 0 < metrics["recall@10"] < 1  # the hard queries are not all answered
    assert (trained / "autoembed_config.yaml").is_file() and (trained / "README.md").is_file()
    model = SentenceTransformer(str(trained), device="cpu")
    # the folder is the model training measured: its metrics come back from sentence-transformers' encode
    expected = brute_force_metrics(model, hard_queries["by_id"], hard_queries["corpus"])
    for key in KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key


def test_same_seed_twice_gives_bit_identical_metrics_and_weights(trained, tmp_path, tiny_model, toy_data, hard_queries):
    from safetensors.torch import load_file

    config = write_config(tmp_path / "config.yaml", tiny_model, toy_data, hard_queries["by_id"])
    result = runner.invoke(app, ["train", str(config), "-o", str(tmp_path / "again")])
    assert result.exit_code == 0, result.stderr
    first, second = (json.loads((folder / "metrics.json").read_text()) for folder in (trained, tmp_path / "again"))
    first.pop("train_seconds"), second.pop("train_seconds")
    assert first == second
    a, b = (load_file(folder / "model.safetensors") for folder in (trained, tmp_path / "again"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("queries", ["by_id", "by_text"])
@pytest.mark.parametrize("which", ["trained", "plain_hf"])
def test_evaluate_prints_one_json_object(trained, tiny_model, hard_queries, which, queries):
    folder = trained if which == "trained" else tiny_model
    args = [
        "evaluate",
        str(folder),
        "--queries",
        str(hard_queries[queries]),
        "--corpus",
        str(hard_queries["corpus"]),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    metrics = json.loads(lines[0])
    assert list(metrics) == KEYS
    expected = brute_force_metrics(load_encoder(str(folder)), hard_queries["by_id"], hard_queries["corpus"])
    for key in KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key


def test_evaluate_without_json_prints_a_table(tiny_model, hard_queries):
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(tiny_model),
            "--queries",
            str(hard_queries["by_id"]),
            "--corpus",
            str(hard_queries["corpus"]),
            "--k",
            "3,1",
        ],
    )
    assert result.exit_code == 0, result.stderr
    for key in ("recall@1", "recall@3", "mrr@10", "ndcg@10"):
        assert key in result.stdout
    assert "recall@10" not in result.stdout


def error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"query": "q", "doc_id": "nope"}, ":1: doc_id: unknown doc_id 'nope': not in the corpus"),
        ({"query": "q", "doc_id": "[bold]x[/bold]"}, ":1: doc_id: unknown doc_id '[bold]x[/bold]': not in the corpus"),
        ({"query": "q", "positive": 5}, ":1: positive: field 'positive' must be a string, got int 5"),
        ({"query": ""}, ":1: query: field 'query' is empty"),
    ],
)
def test_bad_query_rows_are_one_line_naming_file_and_line(tiny_model, toy_data, tmp_path, row, message):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps(row) + "\n")
    result = runner.invoke(
        app, ["evaluate", str(tiny_model), "--queries", str(queries), "--corpus", str(toy_data["corpus"])]
    )
    assert error_line(result) == f"autoembed: error: {queries}{message}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "0"], "autoembed: error: --k must be comma-separated positive integers, got '0'"),
        (["--corpus", "{tmp}/absent.jsonl"], "autoembed: error: {tmp}/absent.jsonl: corpus file not found"),
    ],
)
def test_bad_evaluate_options(tiny_model, toy_data, tmp_path, args, message):
    base = {"--queries": str(toy_data["val"]), "--corpus": str(toy_data["corpus"])}
    flags = dict(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]], strict=True))
    argv = ["evaluate", str(tiny_model)] + [x for kv in {**base, **flags}.items() for x in kv]
    assert error_line(runner.invoke(app, argv)) == message.format(tmp=tmp_path)


def test_bad_training_data_is_one_line(tmp_path, tiny_model, toy_data):
    train_file = tmp_path / "train.jsonl"
    train_file.write_text(toy_data["train"].read_text() + '{"query": "x", "doc_id": "missing"}\n')
    n = len(train_file.read_text().splitlines())
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {tiny_model}\ndata:\n  train: {train_file}\n  corpus: {toy_data['corpus']}\n")
    line = error_line(runner.invoke(app, ["train", str(config), "-o", str(tmp_path / "out")]))
    assert line == f"autoembed: error: {train_file}:{n}: doc_id: unknown doc_id 'missing': not in the corpus"
    assert not (tmp_path / "out").exists()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "40"}  # a narrow terminal must not wrap the error line
    return subprocess.run(
        [sys.executable, "-m", "autoembed.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_bad_config_key_exits_2_with_one_line(tmp_path, tiny_model, toy_data):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: {tiny_model}\ndata:\n  train: {toy_data['train']}\ntraining:\n  batch_size: 8\n  learning_rate: 1e-4\n"
    )
    proc = run_cli("train", str(config), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    from autoembed.config import TrainingConfig

    keys = ", ".join(f.name for f in dataclasses.fields(TrainingConfig))
    assert keys.startswith("backbone_lr, head_lr, weight_decay")  # the section's own fields, in declaration order
    assert proc.stderr.splitlines() == [
        f"autoembed: error: {config}:6: training.learning_rate: unknown key 'learning_rate'; expected one of: {keys}"
    ]
    assert not (tmp_path / "out").exists()


def test_evaluate_json_stdout_is_clean_in_a_real_process(tmp_path, tiny_model, hard_queries):
    proc = run_cli(
        "evaluate",
        str(tiny_model),
        "--queries",
        str(hard_queries["by_text"]),
        "--corpus",
        str(hard_queries["corpus"]),
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    assert list(json.loads(proc.stdout)) == KEYS
    assert "Loading weights" not in proc.stderr  # library progress bars are silenced


@pytest.mark.parametrize(
    ("storage", "expected", "note"),
    [
        (None, "next: autoembed export s1 -o studies/s1/recipe.yaml", None),
        ("sqlite:///elsewhere/s1.db", "next: autoembed export s1 --storage sqlite:///elsewhere/s1.db -o studies/s1/recipe.yaml", None),
        ("postgresql+psycopg://me:hunter2@db:5432/x", 'next: autoembed export s1 --storage "$AUTOEMBED_STORAGE" -o studies/s1/recipe.yaml', "me:***@db"),
    ],
)
def test_next_hint_pastes_as_a_working_command_and_never_shows_a_password(storage, expected, note):
    from autoembed.cli import next_export
    from autoembed.study import default_storage

    lines = next_export("s1", storage or default_storage("s1"))
    assert lines[0] == expected
    assert all("hunter2" not in line for line in lines) and "***" not in lines[0]
    assert (len(lines) == 2 and note in lines[1]) if note else len(lines) == 1


def test_shipped_spaces_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    from autoembed.errors import AutoembedError
    from autoembed.space import SPACES_DIR, SearchSpace, resolve_space, shipped_spaces

    monkeypatch.chdir(tmp_path)
    assert {"default", "training", "icd10", "tiny"} <= set(shipped_spaces())
    assert resolve_space("default") == SPACES_DIR / "default.yaml"
    assert resolve_space("search_spaces/icd10.yaml") == SPACES_DIR / "icd10.yaml"  # the old default path, elsewhere
    assert SearchSpace.from_yaml_file("tiny").name == "tiny"
    mine = tmp_path / "default.yaml"
    mine.write_text("name: mine\nparams:\n  batch_size: {type: categorical, choices: [8]}\n")
    assert SearchSpace.from_yaml_file("default.yaml").name == "mine"  # a path that exists is that file
    with pytest.raises(AutoembedError, match="names no shipped space.*default"):
        resolve_space("nope")


def test_search_help_shows_each_default():
    result = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("[default: (default)]", "[default: (20)]", "[default: (ray)]", "[default: (sqlite:///studies/NAME.db)]"):
        assert text in result.output

"""The ``autoembed`` command line: each subcommand parses its flags and calls the library."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from autoembed.errors import AutoembedError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find the best way to fine-tune a text embedding model.")
console = Console(stderr=True)
out = Console()


def _fail(exc: AutoembedError) -> None:
    console.print(f"[red]autoembed: error:[/red] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="A training config or an exported recipe (YAML).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the model and metrics.json.")],
    allow_changed_data: Annotated[bool, typer.Option("--allow-changed-data", help="Train even if a recipe's data files changed.")] = False,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Train this many seeds and report mean and std.")] = 1,
) -> None:
    """Fine-tune one model from a config (or recipe) and write it with metrics.json."""
    from autoembed.recipe import train_recipe

    try:
        summary = train_recipe(config, output, allow_changed_data=allow_changed_data, seeds=seeds, console=console)
    except AutoembedError as exc:
        _fail(exc)
    out.print_json(json.dumps(summary))


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="A model folder (sentence-transformers or Hugging Face) or package:NAME.")],
    queries: Annotated[Path, typer.Option("--queries", help="JSONL/CSV of queries with doc_id or positive.")],
    corpus: Annotated[Path, typer.Option("--corpus", help="JSONL/CSV corpus of {_id, text} rows.")],
    k: Annotated[str, typer.Option("--k", help="Comma-separated cut-offs for recall@k.")] = "1,10",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 256,
    max_seq_length: Annotated[int | None, typer.Option("--max-seq-length", min=8)] = None,
) -> None:
    """Retrieval metrics of a model: recall@k, MRR@10, nDCG@10."""
    from autoembed.evaluate import evaluate_model

    try:
        ks = _parse_ks(k)
        metrics = evaluate_model(model, queries, corpus, ks=ks, batch_size=batch_size, max_seq_length=max_seq_length, console=console)
    except AutoembedError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(metrics))
        return
    table = Table(title=f"{model} on {queries.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise AutoembedError(f"--k must be comma-separated positive integers, got {text!r}")
    return ks


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except AutoembedError as exc:  # raised outside a command's own handler
        console.print(f"autoembed: error: {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""The ``autoembed`` command line: each subcommand parses its flags and calls the library."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autoembed.errors import AutoembedError, EnvironmentFault

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find the best way to fine-tune a text embedding model.")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _fail(exc: Exception, storage: str | None = None) -> None:
    """Print what went wrong as one line and exit 2 (bad input) or 1 (the machine refused); re-raise a bug."""
    error = user_error(exc, storage)
    if error is None:
        raise exc
    # the message holds user text (paths, ids, values): printed as is, never read as rich markup, on one line
    text = " ".join(str(error).splitlines())
    console.print(f"[red]autoembed: error:[/red] {escape(text)}", highlight=False, soft_wrap=True)
    raise typer.Exit(error.exit_code)


def user_error(exc: BaseException, storage: str | None = None) -> AutoembedError | None:
    """The one-line error an exception stands for, or None for a bug (which keeps its traceback).

    An ``OSError`` that reached here is the machine refusing (read-only folder, full disk); a database error is
    the study storage refusing, found under Optuna's ``StorageInternalError`` as its cause.
    """
    if isinstance(exc, AutoembedError):
        return exc
    if isinstance(exc, OSError):
        return EnvironmentFault.from_os_error(exc, "cannot read or write")
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    seen: BaseException | None = exc
    while seen is not None and sqlalchemy_exc is not None:
        if isinstance(seen, sqlalchemy_exc.DBAPIError):
            from autoembed.study import mask_text, mask_url

            reason = mask_text(str(seen.orig).splitlines()[0] if str(seen.orig) else type(seen.orig).__name__, storage)
            where = f"study storage {mask_url(storage)}" if storage else "study storage"
            if isinstance(seen, sqlalchemy_exc.OperationalError):  # read-only, full, locked, connection lost
                return EnvironmentFault(f"{where}: {reason}", key="storage")
            if type(seen) is sqlalchemy_exc.DatabaseError:  # "file is not a database"
                return AutoembedError(f"{where}: {reason}", key="storage")
            return None
        seen = seen.__cause__ or seen.__context__
    return None


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
    except Exception as exc:
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
    except Exception as exc:
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


def _search_default(name: str) -> str:
    """The default of a search flag as --help shows it: SearchOptions' own, since the flags default to None (unset,
    so a study YAML's value stands) and the help would otherwise show nothing."""
    import dataclasses

    from autoembed.trials import SearchOptions

    value = next(f.default for f in dataclasses.fields(SearchOptions) if f.name == name)
    return "none" if value is None else str(value)


@app.command()
def search(
    study_file: Annotated[Path | None, typer.Argument(help="Optional study YAML (studies/NAME.yaml) setting any of the flags.")] = None,
    train: Annotated[str | None, typer.Option("--train", help="Training pairs (JSONL/CSV).")] = None,
    val: Annotated[str | None, typer.Option("--val", help="Validation pairs.", show_default="split off --train")] = None,
    corpus: Annotated[str | None, typer.Option("--corpus", help="Corpus {_id, text} that recall searches.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Base model folder or package:NAME.")] = None,
    space: Annotated[str | None, typer.Option("--space", help="A shipped space (default, training, icd10, tiny) or a search-space YAML path.", show_default=_search_default("space"))] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name.")] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="Total finished trials wanted (resume counts old ones).", show_default=_search_default("trials"))] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds the search may take: no trial starts after them, nor one the plan predicts to end more than a tenth of them past them.", show_default=_search_default("timeout"))] = None,
    start_late_trials: Annotated[bool | None, typer.Option("--start-late-trials", help="Start trials until --timeout even when they will end after it (Optuna's timeout).", show_default=_search_default("start_late_trials"))] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL.", show_default="sqlite:///studies/NAME.db")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Concurrent trials.", show_default=_search_default("workers"))] = None,
    gpus_per_trial: Annotated[float | None, typer.Option("--gpus-per-trial", help="GPU fraction per trial.", show_default=_search_default("gpus_per_trial"))] = None,
    cpus_per_trial: Annotated[float | None, typer.Option("--cpus-per-trial", help="CPUs per trial (torch threads follow).", show_default="all CPUs / workers")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster address.", show_default="start a local Ray")] = None,
    executor: Annotated[str | None, typer.Option("--executor", help="ray, or inline (in-process, sequential).", show_default=_search_default("executor"))] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampler and training seed.", show_default=_search_default("seed"))] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", help="Folder for the study's own files.", show_default="beside an SQLite study, else ./studies")] = None,
    keep_models: Annotated[int | None, typer.Option("--keep-models", min=0, help="Keep the models of the best N complete trials (WORKDIR/STUDY/models), for `export --model`; 0 keeps none.", show_default=_search_default("keep_models"))] = None,
) -> None:
    """Search for the best fine-tuning config: an Optuna study run with Ray Tune, pruned early."""
    from autoembed.search import SearchInterrupted, SearchOptions, run_search

    flags = dict(train=train, val=val, corpus=corpus, model=model, space=space, study=study, trials=trials, timeout=timeout,
                 storage=storage, workers=workers, gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
                 ray_address=ray_address, executor=executor, seed=seed, workdir=workdir, keep_models=keep_models,
                 start_late_trials=start_late_trials)
    options = None
    try:
        # stdout carries the result JSON alone: whatever a library prints meanwhile (Ray's "(raylet)" lines) goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            options = SearchOptions.from_sources(str(study_file) if study_file else None, **flags)
            result = run_search(options, console=console)
    except SearchInterrupted as exc:
        console.print(
            f"interrupted by {exc.name}: {exc.failed} running trial(s) marked FAIL, finished trials kept; rerun to resume",
            highlight=False,
        )
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:
        _fail(exc, options.storage_url if options else storage)
    except KeyboardInterrupt:
        console.print("interrupted: finished trials are kept; rerun to resume", highlight=False)
        raise typer.Exit(130) from None
    console.print(
        f"study {result.study_name} in {result.storage}: {result.counts['COMPLETE']} complete, {result.counts['PRUNED']} pruned, "
        f"{result.counts['FAIL']} failed" + (f" ({result.not_started} not started: it would have ended after --timeout)" if result.not_started else "")
        + f"; wall {result.seconds:.0f}s, trial compute {result.trial_seconds:.0f}s",
        highlight=False,
    )
    if result.best_number is not None:
        console.print(f"best trial {result.best_number}: {result.best_value:.4f} with {result.best_params}", highlight=False)
        for line in next_export(result.study_name, options.storage_url, model=result.best_model is not None):
            console.print(line, highlight=False)
    out.print_json(json.dumps({"study": result.study_name, "storage": result.storage, "best_trial": result.best_number,
                               "best_value": result.best_value, "best_model": result.best_model, "counts": result.counts, "wall_seconds": round(result.seconds, 2),
                               "trial_seconds": round(result.trial_seconds, 2)}))


@app.command()
def status(
    study: Annotated[str, typer.Argument(help="Study name.")],
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL; default sqlite:///studies/NAME.db.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Trials of a study: state, params, value, duration, and the best trial."""
    from autoembed.study import best_trial, default_storage, kept_model_path, load_existing, mask_url, trial_rows

    url = storage or default_storage(study)
    try:
        st = load_existing(study, url)
        rows = trial_rows(st)
        best = best_trial(st)
    except Exception as exc:
        _fail(exc, url)
    summary = {
        "study": study,
        "storage": mask_url(url),
        "objective": st.user_attrs.get("objective"),
        "fidelity": st.user_attrs.get("fidelity", "steps"),
        "counts": {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")},
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params, "model": kept_model_path(best)},
        "trials": rows,
    }
    if as_json:
        print(json.dumps(summary, default=str))
        return
    table = Table(title=f"study {study} ({summary['objective']}) in {summary['storage']}")
    unit = "pairs" if summary.get("fidelity") == "pairs" else "steps"  # what the trials' curves are keyed by
    for col in ("#", "state", "value", unit, "seconds", "params"):
        table.add_column(col)
    for r in rows:
        value = f"{r['value']:.4f}" if r["value"] is not None else (r["fail_reason"] or "-")[:60]
        if r["value"] is not None and r["state"] == "PRUNED":
            value = f"({value})"  # its last evaluation, not a value (see the note under the table)
        secs = f"{r['duration_s']:.0f}" if r["duration_s"] is not None else "-"
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        table.add_row(str(r["number"]), r["state"], value, str(r["last_step"] or "-"), secs, params)
    out.print(table)
    if summary["counts"]["PRUNED"]:
        out.print(
            "(x): a pruned trial's last evaluation, on the interim sub-sample when evaluation.interim_* is set: not "
            "comparable with the values of complete trials",
            highlight=False,
        )
    if best is not None:
        kept = summary["best"]["model"]
        out.print(f"best: trial {best.number} = {best.value:.4f}" + (f" (model kept: {kept}; autoembed export --model DIR)" if kept else ""), highlight=False)
    else:
        out.print("no complete trial yet", highlight=False)


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="Study name.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Recipe file to write.")],
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL; default sqlite:///studies/NAME.db.")] = None,
    trial: Annotated[int | None, typer.Option("--trial", help="Trial number; default: the best trial.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Also write the trial's own model, kept by the search, to this folder (no retraining).")] = None,
) -> None:
    """Write the best (or a named) trial as a reproducible recipe for `autoembed train` (and, with --model, its model)."""
    from autoembed.recipe import export_recipe
    from autoembed.study import default_storage

    url = storage or default_storage(study)
    try:
        summary = export_recipe(study, url, output, trial_number=trial, model_output=model)
    except Exception as exc:
        _fail(exc, url)
    what = f"{summary['objective']} = {summary['value']:.4f} at step {summary['step']}"
    if model is not None:
        console.print(
            f"wrote {output} and {model} (trial {summary['trial']}'s model as the search trained it: {what}); "
            f"`autoembed train {output} -o DIR` rebuilds it",
            highlight=False,
        )
    else:
        console.print(f"wrote {output}: trial {summary['trial']} ({what}); next: autoembed train {output} -o DIR", highlight=False)
    out.print_json(json.dumps(summary))


@app.command()
def dashboard(
    study: Annotated[str, typer.Argument(help="Study name.")],
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL; default sqlite:///studies/NAME.db.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file; default NAME/dashboard.html beside an SQLite study, else studies/NAME/dashboard.html.")] = None,
) -> None:
    """Write one self-contained HTML dashboard of a study (works offline)."""
    from autoembed.dashboard import write_dashboard
    from autoembed.study import STUDIES_DIR, default_storage, storage_folder

    url = storage or default_storage(study)
    target = output or (storage_folder(url) or STUDIES_DIR) / study / "dashboard.html"
    try:
        path = write_dashboard(url, study, target)
    except Exception as exc:
        _fail(exc, url)
    console.print(f"wrote {path}", highlight=False)
    print(str(path))


def next_export(study: str, storage_url: str, *, model: bool = False) -> list[str]:
    """The ``next:`` hint after a search: an export command that works when pasted (with ``--model`` when the search
    kept the best trial's model).

    The default storage is left out; another is printed as it is unless it holds a password, which is never
    printed: the command then reads it from $AUTOEMBED_STORAGE, and a note says to set that.
    """
    import shlex

    from autoembed.study import default_storage, mask_url

    command = f"autoembed export {shlex.quote(study)}"
    note = []
    if storage_url != default_storage(study):
        if mask_url(storage_url) == storage_url:
            command += f" --storage {shlex.quote(storage_url)}"
        else:
            command += ' --storage "$AUTOEMBED_STORAGE"'
            note = [f"  (set AUTOEMBED_STORAGE to the storage URL you searched with, {mask_url(storage_url)}, password included)"]
    command += f" -o {shlex.quote(f'studies/{study}/recipe.yaml')}"
    if model:
        command += f" --model {shlex.quote(f'studies/{study}/model')}"
    return [f"next: {command}", *note]


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise AutoembedError(f"--k must be comma-separated positive integers, got {text!r}")
    return ks


def _quiet_libraries() -> None:
    """No library progress bars or info logs: stderr is for autoembed's own progress, stdout for results."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is first imported
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        import transformers.utils.logging

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in RDB ..." is ours to say


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        app()
    except Exception as exc:  # raised outside a command's own handler
        error = user_error(exc)
        if error is None:
            raise
        console.print(f"autoembed: error: {escape(' '.join(str(error).splitlines()))}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()

"""Recipes: a trial's full config plus where it came from; training the final model from one.

A recipe is exactly the YAML ``autoembed train`` reads, with a ``provenance`` section that training uses only
to check that the data is the data the study measured on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from autoembed.config import TrialConfig
from autoembed.errors import AutoembedError
from autoembed.fileio import atomic_write_json, atomic_write_text, check_file_target, follow_umask, sha256_file
from autoembed.provenance import data_provenance, device_description, model_provenance, versions
from autoembed.runs import check_output_dir, staged_folder, train_to_folder
from autoembed.study import kept_model, load_existing, mask_url
from autoembed.training import train


def check_data(config: TrialConfig, *, allow_changed: bool, file: str | None = None) -> list[str]:
    """Compare the data files the config names now with the hashes its provenance recorded; return the changes
    (raise unless allowed). The config's own paths are hashed, so a recipe whose ``data.train`` was edited to
    another file is caught, and a file that moved but kept its content is not a change."""
    prov = config.provenance or {}
    if "data" not in prov:
        return []  # a plain config, not a recipe: nothing to compare with
    recorded = prov.get("data") or {}
    if not isinstance(recorded, dict):
        raise AutoembedError(f"must be a mapping of train/val/corpus entries, got {recorded!r}", file=file, key="provenance.data")
    changes = []
    for role in ("train", "val", "corpus"):
        entry = recorded.get(role)
        path = getattr(config.data, role)
        if entry is not None and not isinstance(entry, dict):
            raise AutoembedError(f"must be a mapping with path and sha256, got {entry!r}", file=file, key=f"provenance.data.{role}")
        if not entry and not path:
            continue
        if not entry:
            changes.append(f"data.{role} is {path}, but the study measured no {role} file")
            continue
        if not path:
            changes.append(f"data.{role} is not set, but the study measured {entry.get('path')}")
            continue
        if not Path(path).is_file():
            changes.append(f"data.{role} file {path} is missing")
            continue
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            was = "" if str(entry.get("path")) == str(path) else f" from the study's {entry.get('path')}"
            changes.append(f"data.{role} file {path} changed{was}: sha256 {digest[:12]}... but the recipe recorded {str(entry.get('sha256'))[:12]}...")
    if changes and not allow_changed:
        raise AutoembedError(changes[0] + " (pass --allow-changed-data to train anyway)", file=file, key="provenance.data")
    return changes


def model_card(config: TrialConfig, metrics: dict[str, Any]) -> str:
    prov = config.provenance or {}
    objective = prov.get("objective", {})
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags: [sentence-transformers, autoembed]",
        "---",
        "",
        "# Embedding model trained by autoembed",
        "",
        f"Base model: `{config.model}`. Objective: `{config.evaluation.metric}`.",
        "",
        "## Validation metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, value in metrics.items():
        if isinstance(value, float):
            lines.append(f"| {key} | {value:.4f} |")
    if objective:
        lines += ["", f"The study measured {objective.get('name')} = {objective.get('value')} at step {objective.get('step')}."]
    lines += ["", "## Use", "", "```python", "from sentence_transformers import SentenceTransformer", "model = SentenceTransformer('PATH_TO_THIS_FOLDER')", "```"]
    lines += ["", "## Recipe", "", "Rebuild with `autoembed train recipe.yaml -o DIR`:", "", "```yaml", config.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)


def train_recipe(path: str | Path, output: str | Path, *, allow_changed_data: bool = False, seeds: int = 1, console=None) -> dict[str, Any]:
    """``autoembed train``: check the data, train (one or more seeds), write the folder and metrics.json.

    With ``seeds > 1`` the extra seeds train first and only their values are kept; the saved folder is the
    recipe's own seed, so it matches the study's trial.
    """
    config = TrialConfig.from_yaml_file(path)
    changes = check_data(config, allow_changed=allow_changed_data, file=str(path))
    output = Path(output)
    check_output_dir(output)  # before any seed trains, not after
    for change in changes:
        _say(console, f"[yellow]warning:[/yellow] {change}")
    values: list[float] = []
    for i in range(1, seeds):
        seeded = config.replace(**{"training.seed": config.training.seed + i})
        with _progress(console, f"seed {seeded.training.seed}") as progress:
            values.append(train(seeded, progress=progress).value)
    def card(metrics: dict[str, Any]) -> str:
        return model_card(config, metrics)

    with _progress(console, f"training seed {config.training.seed}") as progress:
        result = train_to_folder(config, output, progress=progress, card=card, seed_values=values)
    summary = dict(result.record)
    if changes:
        summary["data_changes"] = changes
    summary["output"] = str(output)
    return summary


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text, highlight=False)


class _progress:
    """A rich progress bar on stderr for the training steps (silent without a console)."""

    def __init__(self, console, label: str):
        self.console, self.label = console, label
        self.bar = None

    def __enter__(self):
        if self.console is None:
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"), TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
        self.task = None

        def update(step: int, total: int, loss: float) -> None:
            if self.task is None:  # shown from the first step: an error in the data before it stays the only line
                self.bar.start()
                self.task = self.bar.add_task(self.label, total=total, loss=loss)
            self.bar.update(self.task, completed=step, total=total, loss=loss)

        return update

    def __exit__(self, *exc):
        if self.bar is not None and self.task is not None:
            self.bar.stop()
        return False


def kept_model_or_fail(trial, output: str | Path) -> Path:
    """The folder where the search kept ``trial``'s model, or a one-line error that says why there is none and what
    to do instead."""
    folder, why = kept_model(trial)
    if folder is None:
        raise AutoembedError(
            f"trial {trial.number}'s model is not kept: {why}; export without --model and train it from the recipe "
            f"(autoembed train {output} -o DIR)",
            key="--model",
        )
    return folder


def copy_kept_model(source: Path, target: Path, config: TrialConfig, trial) -> dict[str, Any]:
    """Stage a copy of a kept trial model as ``autoembed train`` would write it (metrics.json, model card, the recipe as
    autoembed_config.yaml); returns the staged folder's metrics record. The caller moves the folder into place."""
    record = json.loads((source / "metrics.json").read_text(encoding="utf-8"))
    record["study_value"] = trial.value
    record["kept_by_search"] = {"study": (config.provenance or {}).get("study", {}).get("name"), "trial": trial.number}
    shutil.copytree(source, target, dirs_exist_ok=True)
    (target / "trial.json").unlink()
    atomic_write_json(target / "metrics.json", record)
    (target / "README.md").write_text(model_card(config, record), encoding="utf-8")
    config.to_yaml_file(target / "autoembed_config.yaml")
    follow_umask(target)
    return record


def export_recipe(
    study_name: str, storage_url: str, output: str | Path, *, trial_number: int | None = None, model_output: str | Path | None = None
) -> dict[str, Any]:
    """``autoembed export``: the best (or named) trial's full config plus provenance, as a recipe file.

    The recipe pins ``training.max_steps`` to the step the trial's value was measured at (the trial's last
    evaluation, see :func:`autoembed.training.trial_value`), so training from it stops exactly there.
    With ``model_output`` the trial's own model, kept by the search, is copied there too (``autoembed export
    --model``): the model the study measured, without training it again. Nothing is written unless that model
    is there; the model folder appears only whole.
    """
    check_file_target(output)  # a folder given as -o is refused before the study is read
    if model_output is not None:
        check_output_dir(Path(model_output))
    study = load_existing(study_name, storage_url)
    trials = study.get_trials(deepcopy=False)
    if trial_number is None:
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if not complete:
            raise AutoembedError(f"study {study_name!r} has no COMPLETE trial to export yet", key="study")
        trial = max(complete, key=lambda t: (t.value, -t.number))
    else:
        matches = [t for t in trials if t.number == trial_number]
        if not matches:
            raise AutoembedError(f"study {study_name!r} has no trial {trial_number} (it has {len(trials)} trials)", key="--trial")
        trial = matches[0]
        if trial.state != TrialState.COMPLETE:
            raise AutoembedError(f"trial {trial_number} is {trial.state.name}; only a COMPLETE trial has a value to reproduce", key="--trial")
    if "config" not in trial.user_attrs:
        raise AutoembedError(f"trial {trial.number} carries no autoembed config (was the study made by autoembed?)", key="--trial")
    config = TrialConfig.from_dict(trial.user_attrs["config"])
    # a curve keyed by training pairs (the study's fidelity) says nothing of the optimizer step: only value_step does
    step = trial.user_attrs.get("value_step") or (trial.last_step if study.user_attrs.get("fidelity", "steps") == "steps" else None)
    if step:
        config = config.replace(**{"training.max_steps": int(step)})
    if trial.user_attrs.get("merge_alpha") is not None:
        # merge_base: auto picked this weight on validation; the recipe fixes it, so training rebuilds that model
        config = config.replace(**{"training.merge_base": float(trial.user_attrs["merge_alpha"])})
    # the trial's own driver's provenance (drivers and resumed runs of one study may differ), else the study's
    study_prov = trial.user_attrs.get("provenance") or study.user_attrs.get("provenance") or {}
    config.provenance = {
        # the trial's own base model: the study's, or (when the space searches the model) the one it sampled
        "base_model": (study_prov.get("models") or {}).get(config.model) or study_prov.get("base_model") or model_provenance(config.model),
        "data": study_prov.get("data") or data_provenance(config),
        "split_seed": config.data.split_seed,
        "training_seed": config.training.seed,
        # step: the optimizer step training stops at (pinned above); pairs: training pairs seen there, the unit the
        # study's curves and pruner count in
        "objective": {"name": config.evaluation.metric, "value": trial.value, "step": step, "pairs": trial.user_attrs.get("value_pairs")},
        "study": {"name": study_name, "trial": trial.number, "storage": mask_url(storage_url)},
        "space": study_prov.get("space"),
        **({"extra_train": study_prov["extra_train"]} if study_prov.get("extra_train") else {}),
        # what the trial measured its export to give (PCA, fp16: validation before and after); train measures again
        **({"export": trial.user_attrs["export"]} if trial.user_attrs.get("export") else {}),
        "versions": study_prov.get("versions") or versions(),
        "device": trial.user_attrs.get("device") or study_prov.get("device") or device_description(config.training.device),
        "exported_with": versions(),
    }
    text = "# autoembed recipe: rebuild with `autoembed train THIS_FILE -o DIR`\n" + config.to_yaml()
    summary = {"recipe": str(output), "study": study_name, "trial": trial.number, "value": trial.value, "objective": config.evaluation.metric, "step": step}
    if model_output is None:
        atomic_write_text(output, text)
        return summary
    source = kept_model_or_fail(trial, output)
    with staged_folder(Path(model_output)) as staged:
        copy_kept_model(source, staged, config, trial)
        atomic_write_text(output, text)
    return {**summary, "model": str(model_output)}

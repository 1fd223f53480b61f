"""Running training from a config file and saving what it produced: the model folder and metrics.json."""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from autoembed.errors import AutoembedError
from autoembed.export import export_model
from autoembed.fileio import atomic_write_json
from autoembed.training import train


def replace_dir(staged: Path, target: Path) -> None:
    """Move a finished folder into place; an older result there is replaced only once the new one is whole."""
    target = Path(target)
    if target.exists():
        if not target.is_dir():
            raise AutoembedError("output exists and is not a folder", file=str(target))
        if any(target.iterdir()) and not (target / "metrics.json").is_file() and not (target / "modules.json").is_file():
            raise AutoembedError("output folder is not empty and holds no earlier autoembed result; choose another -o", file=str(target))
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
        staged.rename(target)
        shutil.rmtree(old)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(target)


def staging_dir(target: Path) -> Path:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))


def save_model(model, folder: Path, *, metrics: dict[str, Any], card: str | None = None) -> None:
    """Write the sentence-transformers folder, metrics.json and (optionally) the model card."""
    model.save(str(folder))
    atomic_write_json(folder / "metrics.json", metrics)
    if card is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")


def seed_summary(values: list[float], study_value: float | None) -> dict[str, Any]:
    """What ``--seeds N`` adds to metrics.json: the spread over seeds next to the study's (biased) value."""
    out: dict[str, Any] = {"seeds": {"n": len(values), "values": values, "mean": statistics.fmean(values)}}
    out["seeds"]["std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    if study_value is not None:
        out["study_value"] = study_value
        out["study_value_minus_seed_mean"] = study_value - out["seeds"]["mean"]
    return out


def metrics_record(result, config) -> dict[str, Any]:
    """metrics.json: the final validation metrics under their own keys, plus what they were measured on."""
    record: dict[str, Any] = dict(result.metrics)
    record["objective"] = config.evaluation.metric
    record["value"] = result.value
    record["step"] = result.value_step
    record["train_seconds"] = round(result.seconds, 3)
    if getattr(result, "merge_alpha", None) is not None:
        record["merge_alpha"] = result.merge_alpha
        record["merge_scores"] = result.merge_scores
    return record


def train_to_folder(config, output: Path, *, progress=None, card=None, extra: dict[str, Any] | None = None, seed_values: list[float] | None = None):
    """Train ``config`` and write the model folder, metrics.json and model card to ``output``, all or nothing.

    ``card`` is a function of the final metrics record giving the README.md text. ``seed_values`` are the
    values of extra seeds trained before; with them metrics.json reports mean and spread.
    """
    result = train(config, progress=progress)
    staged = staging_dir(output)
    try:
        record = metrics_record(result, config)
        exported = export_model(result.model, config, result.prepared, result.metrics)
        if exported:
            record["export"] = exported
        record.update(extra or {})
        if seed_values:
            study_value = ((config.provenance or {}).get("objective") or {}).get("value")
            record.update(seed_summary([result.value, *seed_values], study_value))
        elif ((config.provenance or {}).get("objective") or {}).get("value") is not None:
            record["study_value"] = config.provenance["objective"]["value"]
        save_model(result.model, staged, metrics=record, card=card(record) if card else None)
        config.to_yaml_file(staged / "autoembed_config.yaml")
        replace_dir(staged, output)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    result.record = record
    return result

"""Running training from a config file and saving what it produced: the model folder and metrics.json."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autoembed.errors import AutoembedError, EnvironmentFault
from autoembed.export import export_model
from autoembed.fileio import atomic_write_json, follow_umask
from autoembed.training import train


def check_output_dir(target: Path) -> None:
    """Refuse an output folder before any training: it must be new, empty or an earlier autoembed result, and
    its parent must take a new folder (probed by making and removing the staging folder there)."""
    target = Path(target)
    for parent in (target, *target.parents):
        if parent.exists():
            if not parent.is_dir():
                what = "output exists and is not a folder" if parent == target else f"cannot make the output folder: {parent} is a file"
                raise AutoembedError(what, file=str(target))
            break
    if target.is_dir() and any(target.iterdir()) and not (target / "metrics.json").is_file() and not (target / "modules.json").is_file():
        raise AutoembedError("output folder is not empty and holds no earlier autoembed result; choose another -o", file=str(target))
    shutil.rmtree(staging_dir(target))


def replace_dir(staged: Path, target: Path) -> None:
    """Move a finished folder into place; an older result there is replaced only once the new one is whole."""
    target = Path(target)
    if target.exists():
        check_output_dir(target)
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
        try:
            staged.rename(target)
        except BaseException:
            old.rename(target)  # the earlier result stays where it was
            raise
        shutil.rmtree(old)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(target)


def staging_dir(target: Path) -> Path:
    """A fresh folder beside ``target`` to build a result in; it takes the umask's modes, as ``target`` will."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    except OSError as exc:
        raise EnvironmentFault.from_os_error(exc, "cannot make the output folder") from None
    follow_umask(staged)
    return staged


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Build a result folder in a staging folder beside ``target`` and move it into place when the block ends
    well; otherwise remove it, and raise a failed write as the machine's fault (:func:`write_fault`)."""
    staged = staging_dir(target)
    try:
        yield staged
        replace_dir(staged, target)
    except Exception as exc:
        shutil.rmtree(staged, ignore_errors=True)
        fault = write_fault(exc, target)
        if fault is None:
            raise
        raise fault from None
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def write_fault(exc: Exception, target: Path) -> EnvironmentFault | None:
    """A failed write as the machine's fault: an OSError, or safetensors' own error wrapping one (disk full)."""
    if isinstance(exc, EnvironmentFault):
        return exc
    if isinstance(exc, OSError):
        return EnvironmentFault.from_os_error(exc)
    text = " ".join(str(exc).split())
    if type(exc).__name__ == "SafetensorError" and re.search(r"I/?O ?error", text, re.IGNORECASE):
        code = re.search(r"(?:os error|code:) (\d+)", text)
        reason = os.strerror(int(code.group(1))) if code else text
        return EnvironmentFault(f"cannot write the model weights: {reason}", file=str(target))
    return None


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
    check_output_dir(output)
    result = train(config, progress=progress)
    with staged_folder(output) as staged:
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
        follow_umask(staged)  # libraries may write owner-only files (via their own temporary files)
    result.record = record
    return result

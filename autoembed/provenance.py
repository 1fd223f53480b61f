"""Where a study's or a recipe's result came from: data and model hashes, package versions, the device.

The search records it on the study, the recipe carries it, and ``autoembed train`` checks the data against it.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
from pathlib import Path
from typing import Any

from autoembed import __version__
from autoembed.config import TrialConfig
from autoembed.fileio import sha256_file
from autoembed.model import resolve_model_path


def count_rows(path: str | Path) -> int:
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        n = sum(1 for line in fh if line.strip())
    return n - 1 if path.suffix.lower() == ".csv" else n


def data_provenance(config: TrialConfig) -> dict[str, Any]:
    out = {}
    for role in ("train", "val", "corpus"):
        path = getattr(config.data, role)
        out[role] = None if path is None else {"path": path, "sha256": sha256_file(path), "rows": count_rows(path)}
    for i, path in enumerate(config.data.extra_train or ()):
        out[f"extra_train[{i}]"] = {"path": path, "sha256": sha256_file(path), "rows": count_rows(path)}
    return out


def model_provenance(ref: str) -> dict[str, Any]:
    path = resolve_model_path(ref)
    weights = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())
    return {"ref": ref, "path": str(path), "sha256": {str(p.relative_to(path)): sha256_file(p) for p in weights}}


def versions() -> dict[str, str]:
    out = {"autoembed": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "sentence-transformers", "optuna", "ray"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_description(device: str = "auto") -> str:
    """The device a run uses, in words. A CUDA name is described only where CUDA is really there: a CPU-only
    driver of a GPU cluster describes its own CPU rather than crashing on a missing CUDA runtime."""
    import torch

    wants_cuda = device == "auto" or device.startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"

"""Domain-adversarial fine-tuning: a small domain classifier learns to tell the training texts from general
text, and a gradient-reversal layer (Ganin & Lempitsky, 2015) hands the encoder that gradient with its sign
flipped and scaled by ``loss.adversarial_weight``, so the encoder learns to make the two indistinguishable.
The classifier is not saved with the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoembed.errors import AutoembedError

HIDDEN = 64


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, strength: float) -> Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.strength * grad, None


def reverse_gradient(x: Tensor, strength: float = 1.0) -> Tensor:
    """The identity forward; backward, the gradient times ``-strength``."""
    return _Reverse.apply(x, strength)


class DomainHead(nn.Module):
    """An MLP scoring an embedding as in-domain (1) or general (0), behind a gradient-reversal layer."""

    def __init__(self, dim: int, *, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the training run's own random stream stays as without the head
            torch.manual_seed(seed)
            self.mlp = nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))

    def loss(self, in_domain: Tensor, general: Tensor, strength: float) -> Tensor:
        """Binary cross-entropy, each domain weighted equally; the encoder's gradient is reversed."""
        x = reverse_gradient(torch.cat([in_domain, general]), strength).to(self.mlp[0].weight.dtype)
        logits = self.mlp(x).squeeze(-1)
        target = torch.cat([torch.ones(len(in_domain)), torch.zeros(len(general))]).to(logits.device)
        per_row = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (per_row[: len(in_domain)].mean() + per_row[len(in_domain) :].mean()) / 2


def read_general_texts(path: str | Path) -> list[str]:
    """One text a line (.txt or any other suffix), or ``.jsonl`` / ``.csv`` rows with a ``text`` field."""
    path = Path(path)
    if not path.is_file():
        raise AutoembedError("general-text file not found", file=str(path), key="data.general_texts")
    suffix = path.suffix.lower()
    texts: list[str] = []
    if suffix in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise AutoembedError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=str(path), line=number) from None
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise AutoembedError(f"each row needs a non-empty string 'text', got {text!r}", file=str(path), line=number, key="text")
                texts.append(text)
    elif suffix == ".csv":
        import csv

        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if "text" not in (reader.fieldnames or ()):
                raise AutoembedError("the CSV header has no 'text' column", file=str(path), line=1, key="text")
            texts = [row["text"] for row in reader if (row.get("text") or "").strip()]
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(texts) < 2:
        raise AutoembedError(f"needs at least 2 texts, got {len(texts)}", file=str(path), key="data.general_texts")
    return texts

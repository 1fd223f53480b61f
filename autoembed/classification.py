"""Joint contrastive + classification training: a linear classifier over the embedding, its cross-entropy
weighted into the loss by ``loss.classification_weight``.

A row's class is its ``label`` (a pair or triplet row's class field), else the ``doc_id`` of its answer, else
its positive text. The row's query and its positive both carry the class, so a class seen in one row still has
two examples. The classifier trains the encoder and is not saved: the model folder is the same
sentence-transformers folder as without it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoembed.data import Example
from autoembed.errors import AutoembedError


def row_class(example: Example) -> str:
    if example.category is not None:
        return f"label:{example.category}"
    if example.doc_id is not None:
        return f"doc:{example.doc_id}"
    return f"text:{example.positive}"


class ClassHead(nn.Module):
    """A linear classifier over the embedding; ``classes`` maps each training row's class to its output."""

    def __init__(self, examples: list[Example], dim: int, *, seed: int):
        super().__init__()
        if any(ex.label is not None for ex in examples):
            raise AutoembedError(
                "labeled pairs (text1/text2/label) have no class to classify; set loss.classification_weight to 0",
                key="loss.classification_weight",
            )
        self.classes = {c: i for i, c in enumerate(dict.fromkeys(row_class(ex) for ex in examples))}
        with torch.random.fork_rng(devices=[]):  # the training run's own random stream stays as without the head
            torch.manual_seed(seed)
            self.linear = nn.Linear(dim, len(self.classes))

    def targets(self, examples: list[Example], device: torch.device | str) -> Tensor:
        return torch.tensor([self.classes[row_class(ex)] for ex in examples], device=device)

    def loss(self, anchors: Tensor, positives: Tensor, targets: Tensor, smoothing: float) -> Tensor:
        """Cross-entropy of the queries' and the positives' embeddings against their rows' classes."""
        logits = self.linear(torch.cat([anchors, positives]).to(self.linear.weight.dtype))
        return F.cross_entropy(logits, torch.cat([targets, targets]), label_smoothing=smoothing)

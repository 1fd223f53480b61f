"""Progressive fine-tuning: the head trains alone first, then the backbone unfreezes from the top down; and
layer-wise learning-rate decay, which gives each backbone layer a smaller step than the layer above it.

Both work on the backbone's *units*, bottom up: its embeddings, each encoder layer, and whatever else it holds
(a pooler), which counts as the top.
"""

from __future__ import annotations

from torch import nn

from autoembed.errors import AutoembedError


def encoder_layers(hf_model: nn.Module) -> nn.ModuleList | None:
    """The first ``layer`` or ``layers`` ModuleList inside a Hugging Face encoder, bottom layer first."""
    for module in hf_model.modules():
        for name in ("layer", "layers"):
            candidate = getattr(module, name, None)
            if isinstance(candidate, nn.ModuleList):
                return candidate
    return None


def backbone_units(model) -> list[list[tuple[str, nn.Parameter]]]:
    """The backbone's parameters (named as in ``model.named_parameters()``) by unit: embeddings, each layer
    bottom up, then the rest; a unit may be empty."""
    hf = model[0].model
    layers = encoder_layers(hf)
    if layers is None:
        raise AutoembedError("cannot find the backbone's encoder layers", key="training.layer_lr_decay")
    embeddings = getattr(hf, "embeddings", None)
    unit_of: dict[int, int] = {}
    for p in embeddings.parameters() if embeddings is not None else ():
        unit_of[id(p)] = 0
    for i, layer in enumerate(layers, start=1):
        for p in layer.parameters():
            unit_of[id(p)] = i
    units: list[list[tuple[str, nn.Parameter]]] = [[] for _ in range(len(layers) + 2)]
    for name, p in model[0].named_parameters():
        units[unit_of.get(id(p), len(layers) + 1)].append((f"0.{name}", p))
    return units


def layer_lr_chunks(model, backbone: list[tuple[str, nn.Parameter]], lr: float, decay: float) -> list[tuple[list, float, str]]:
    """``(params, lr, group name)`` for the backbone's trainable ``backbone`` parameters.

    With ``decay`` 1.0 that is one chunk, as without this feature. Otherwise the top unit (the last encoder
    layer and what sits above it) gets ``lr``, the layer under it ``lr * decay``, and so on; the embeddings get
    ``lr * decay ** n_layers``.
    """
    if decay == 1.0:
        return [(backbone, lr, "backbone")]
    trainable = {id(p) for _, p in backbone}
    units = backbone_units(model)
    n_layers = len(units) - 2
    chunks = []
    for i, unit in enumerate(units):
        params = [(n, p) for n, p in unit if id(p) in trainable]
        if params:
            depth = max(0, n_layers - i)  # layers below the top one; the rest (i = n_layers + 1) counts as the top
            name = "embeddings" if i == 0 else f"layer{i - 1}" if i <= n_layers else "rest"
            chunks.append((params, lr * decay**depth, f"backbone.{name}"))
    return chunks


class UnfreezeSchedule:
    """Which backbone units train after a number of training rows (pairs) seen.

    The backbone is frozen until ``head_pairs`` rows have trained the head; then the top layer unfreezes (with
    whatever sits above it), then one more layer every ``layer_pairs`` rows (all at once when 0), and the
    embeddings last. Parameters frozen before (``training.freeze_layers``) are left out and never unfreeze;
    the others are in the optimizer from the start and only switch ``requires_grad``, so AdamW skips them (no
    gradient, no moment update, no weight decay) until they unfreeze.
    """

    def __init__(self, model, head_pairs: int, layer_pairs: int):
        self.head_pairs, self.layer_pairs = head_pairs, layer_pairs
        units = backbone_units(model)
        # top first: the rest and the top layer together, then each layer down, then the embeddings
        top = units[-1] + units[-2]
        below = [units[i] for i in range(len(units) - 3, -1, -1)]
        self.stages = [[p for _, p in top if p.requires_grad]] + [[p for _, p in u if p.requires_grad] for u in below]
        self.unfrozen = -1
        self.update(0)

    def stages_open(self, pairs_seen: int) -> int:
        """How many stages (top first) train once ``pairs_seen`` rows have been trained on."""
        if pairs_seen < self.head_pairs:
            return 0
        if self.layer_pairs == 0:
            return len(self.stages)
        return min(len(self.stages), 1 + (pairs_seen - self.head_pairs) // self.layer_pairs)

    def update(self, pairs_seen: int) -> int:
        n = self.stages_open(pairs_seen)
        if n != self.unfrozen:
            for i, params in enumerate(self.stages):
                for p in params:
                    p.requires_grad_(i < n)
            self.unfrozen = n
        return n

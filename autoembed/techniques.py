"""The optional training techniques, wired into one training run behind a few hooks (autoembed/training.py).

Each is off by default, and off it changes nothing: no parameter, no random number, no operation. On:
- ``loss.classification_weight``: a class head's cross-entropy joins the loss (autoembed/classification.py);
- ``loss.adversarial_weight`` with ``data.general_texts``: domain-adversarial training (autoembed/adversarial.py);
- ``training.unfreeze_head_pairs`` / ``training.unfreeze_layer_pairs``: progressive unfreezing
  (autoembed/progressive.py; ``training.layer_lr_decay`` acts in the optimizer's groups);
- ``data.augment_delete_rate`` / ``data.augment_swap_rate``: query augmentation (autoembed/augment.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import Tensor

from autoembed.adversarial import DomainHead, read_general_texts
from autoembed.augment import augment_query
from autoembed.classification import ClassHead
from autoembed.config import TrialConfig
from autoembed.data import Example
from autoembed.errors import AutoembedError
from autoembed.evaluation import TokenCache
from autoembed.progressive import UnfreezeSchedule

Embed = Callable[[TokenCache, list[int]], Tensor]


class Techniques:
    """What the techniques a config turns on add to a run: parameters, a loss term, unfreezing, augmentation."""

    def __init__(self, config: TrialConfig, model, train_rows: list[Example], *, dim: int, device: torch.device, embed: Embed):
        self.config, self.model, self.device, self.embed = config, model, device, embed
        d, loss, t = config.data, config.loss, config.training
        self.classes = ClassHead(train_rows, dim, seed=t.seed).to(device) if loss.classification_weight > 0 else None
        self.domain = None
        if loss.adversarial_weight > 0:
            if not d.general_texts:
                raise AutoembedError("needs data.general_texts, a file of general-domain text", key="loss.adversarial_weight")
            general = read_general_texts(d.general_texts)
            self.general = TokenCache.build(model[0].tokenizer, general, d.max_seq_length)
            self.domain = DomainHead(dim, seed=t.seed + 1).to(device)
        self.augments = d.augment_delete_rate > 0 or d.augment_swap_rate > 0
        self.progressive = t.unfreeze_head_pairs > 0 or t.unfreeze_layer_pairs > 0
        self.schedule: UnfreezeSchedule | None = None
        self.adds_loss = self.classes is not None or self.domain is not None

    def param_chunks(self) -> list[tuple[list, float, str]]:
        """The heads' parameters, for the optimizer, at the head learning rate."""
        lr = self.config.training.head_lr
        return [(list(head.named_parameters()), lr, name) for name, head in (("classifier", self.classes), ("domain", self.domain)) if head is not None]

    def start(self) -> None:
        """Freeze what the unfreeze schedule holds back; call after the optimizer is built (it keeps them)."""
        if self.progressive:
            t = self.config.training
            heads = any(p.requires_grad for i, module in enumerate(self.model) if i > 0 for p in module.parameters())
            if t.unfreeze_head_pairs > 0 and not heads and self.classes is None and self.domain is None:
                raise AutoembedError(
                    "the model has no head to train alone (set architecture.adapter_depth or architecture.output_dim)",
                    key="training.unfreeze_head_pairs",
                )
            self.schedule = UnfreezeSchedule(self.model, t.unfreeze_head_pairs, t.unfreeze_layer_pairs)

    def before_step(self, pairs_seen: int) -> None:
        if self.schedule is not None:
            self.schedule.update(pairs_seen)

    def embed_anchors(self, examples: list[Example], step: int) -> Tensor:
        """The queries' embeddings, each query augmented for this step."""
        d = self.config.data
        texts = [
            augment_query(ex.anchor, delete_rate=d.augment_delete_rate, swap_rate=d.augment_swap_rate, seed=self.config.training.seed, step=step)
            for ex in examples
        ]
        cache = TokenCache.build(self.model[0].tokenizer, texts, d.max_seq_length)
        return self.embed(cache, [cache.index[t] for t in texts])

    def extra_loss(self, examples: list[Example], anchors: Tensor, positives: Tensor, step: int) -> Tensor:
        """The weighted classification and adversarial terms for this batch."""
        loss_cfg = self.config.loss
        total = anchors.new_zeros(())
        if self.classes is not None:
            term = self.classes.loss(anchors, positives, self.classes.targets(examples, self.device), loss_cfg.label_smoothing)
            total = total + loss_cfg.classification_weight * term
        if self.domain is not None:
            rng = random.Random(f"{self.config.training.seed}:{step}")
            n = min(len(examples), len(self.general.texts))
            general = self.embed(self.general, rng.sample(range(len(self.general.texts)), n)).float()
            total = total + self.domain.loss(torch.cat([anchors, positives]), general, loss_cfg.adversarial_weight)
        return total

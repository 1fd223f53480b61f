"""Query-side augmentation: random word deletion and swap (the EDA operations that need no resource).

Each training query is perturbed afresh at each step. The randomness is a function of ``(seed, step, text)``
alone, so a recipe that pins the step reproduces its trial exactly, whatever else consumes random numbers.
Synonym replacement needs synonym pairs (the search-quality issue) and back-translation a translation model
(none can be installed here); both are left out.
"""

from __future__ import annotations

import hashlib
import random


def _rng(seed: int, step: int, text: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{step}:{text}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def augment_query(text: str, *, delete_rate: float, swap_rate: float, seed: int, step: int) -> str:
    """``text`` with each word deleted with probability ``delete_rate`` (one word always stays), then
    ``round(swap_rate * n_words)`` swaps of two random words."""
    words = text.split()
    if len(words) < 2 or (delete_rate <= 0 and swap_rate <= 0):
        return text
    rng = _rng(seed, step, text)
    if delete_rate > 0:
        kept = [w for w in words if rng.random() >= delete_rate]
        words = kept or [rng.choice(words)]
    for _ in range(round(swap_rate * len(words)) if len(words) > 1 else 0):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)

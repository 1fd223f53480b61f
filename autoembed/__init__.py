"""autoembed: find the best way to fine-tune a text embedding model for your domain."""

from __future__ import annotations

import os

# Nothing loads from a model hub at run time: models come from local folders or installed packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
__all__ = ["__version__"]

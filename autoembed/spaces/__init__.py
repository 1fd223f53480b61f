"""The search spaces that ship with autoembed, as package data beside this file; ``search_spaces/`` in a checkout
links to the same YAML files. :func:`resolve_space` turns a ``--space`` value into one of them or a user's file."""

from __future__ import annotations

from pathlib import Path

from autoembed.errors import AutoembedError

__all__ = ["SPACES_DIR", "resolve_space", "shipped_spaces"]

SPACES_DIR = Path(__file__).resolve().parent


def shipped_spaces() -> list[str]:
    """The names ``--space`` accepts without a path: default, training, icd10, tiny."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve_space(ref: str | Path) -> Path:
    """The file a ``--space`` value means: a path to an existing file is that file; a bare name (``default``,
    ``icd10.yaml``) or the old ``search_spaces/NAME.yaml`` missing from the current folder is the packaged space,
    so the shipped spaces work from any folder."""
    path = Path(ref)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    bare = len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "search_spaces")
    if bare and (SPACES_DIR / f"{name}.yaml").is_file():
        return SPACES_DIR / f"{name}.yaml"
    raise AutoembedError(
        f"file not found, and {str(ref)!r} names no shipped space; give a YAML path or one of: {', '.join(shipped_spaces())}",
        file=str(ref),
        key="space",
    )

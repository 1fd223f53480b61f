"""Writing files so that an interrupted run leaves nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from autoembed.errors import AutoembedError, EnvironmentFault


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def follow_umask(path: str | Path) -> None:
    """Give ``path`` (and, for a folder, everything in it) the modes a plain mkdir/open would have.

    ``tempfile`` makes owner-only folders and files; a result moved out of one must be readable by whoever
    the umask lets read it, like any other file the user writes.
    """
    path = Path(path)
    umask = current_umask()
    dir_mode, file_mode = 0o777 & ~umask, 0o666 & ~umask
    os.chmod(path, dir_mode if path.is_dir() else file_mode)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), dir_mode)
            for name in files:
                os.chmod(os.path.join(root, name), file_mode)


def check_file_target(path: str | Path) -> Path:
    """Refuse an output file path that names a folder, or lies under a file, before anything is written."""
    path = Path(path)
    if path.is_dir():
        raise AutoembedError("is a folder; give a file path (e.g. FOLDER/recipe.yaml)", file=str(path))
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AutoembedError(f"cannot write here: {parent} is a file, not a folder", file=str(path))
            break
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it: readers see the old file or the new one.

    Raises:
        AutoembedError: ``path`` is a folder or lies under a file.
        EnvironmentFault: the folder is read-only or the disk is full (the old file, if any, is kept).
    """
    path = check_file_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise EnvironmentFault.from_os_error(exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        follow_umask(tmp)  # mkstemp makes the file owner-only
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EnvironmentFault.from_os_error(exc if exc.filename else OSError(exc.errno, exc.strerror, str(path))) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()

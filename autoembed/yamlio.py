"""Safe YAML loading that remembers the line of every key, so errors can name it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autoembed.errors import AutoembedError


class Located(dict):
    """A dict loaded from YAML that knows its file and the line of each key."""

    file: str
    lines: dict[str, int]

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key)


def _construct(node: yaml.Node, file: str, loader: yaml.SafeLoader, path: str = "") -> Any:
    if isinstance(node, yaml.MappingNode):
        out = Located()
        out.file = file
        out.lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise AutoembedError(f"keys must be strings, got {key!r}", file=file, line=line)
            key_path = f"{path}.{key}" if path else key
            if key in out:
                # PyYAML keeps the last of two equal keys; one of them is a mistake the user should see.
                raise AutoembedError(
                    f"duplicate key {key!r} (first on line {out.lines[key]}); a mapping names each key once",
                    file=file,
                    line=line,
                    key=key_path,
                )
            out[key] = _construct(value_node, file, loader, key_path)
            out.lines[key] = line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, file, loader, f"{path}[{i}]") for i, child in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml(path: str | Path) -> Located:
    """Safe-load a YAML mapping from ``path``; every nested mapping is a :class:`Located`."""
    path = Path(path)
    if not path.is_file():
        raise AutoembedError("file not found", file=str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise AutoembedError(f"not UTF-8 text: byte {raw[exc.start:exc.start + 1]!r}; save the file as UTF-8", file=str(path), line=line) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise AutoembedError(
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
            file=str(path),
            line=mark.line + 1 if mark else None,
        ) from None
    finally:
        loader.dispose()
    if node is None:
        raise AutoembedError("file is empty, expected a mapping", file=str(path))
    try:
        data = _construct(node, str(path), yaml.SafeLoader(""))
    except yaml.YAMLError as exc:  # a tag safe_load does not build (!!python/object, !foo)
        mark = getattr(exc, "problem_mark", None)
        raise AutoembedError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", file=str(path), line=mark.line + 1 if mark else None) from None
    if not isinstance(data, Located):
        raise AutoembedError(f"expected a mapping at the top, got {type(data).__name__}", file=str(path), line=1)
    return data


def line_table(data: Any, prefix: str = "") -> dict[str, int]:
    """The line of every key under ``data`` by its dotted path: ``fixed.training.max_steps``, ``points[0].loss``."""
    out: dict[str, int] = {}
    if isinstance(data, list):
        for i, value in enumerate(data):
            out.update(line_table(value, f"{prefix}[{i}]"))
    for key, value in data.items() if isinstance(data, dict) else ():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key in getattr(data, "lines", {}):
            out[path] = data.lines[key]
        out.update(line_table(value, path))
    return out


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(plain(data), sort_keys=False, default_flow_style=False, allow_unicode=True)


def plain(value: Any) -> Any:
    """Plain dicts and lists all the way down (no :class:`Located`, no tuples), as YAML and JSON write them."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value

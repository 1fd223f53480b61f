"""Strict pydantic models for autoembed's YAML files, with their errors in the files' own words.

A :class:`Strict` model rejects unknown keys and names the keys it has; a failed check of any kind, pydantic's or
one raised with :func:`fail`, becomes one :class:`AutoembedError` (:func:`located`) whose key is the dotted path
through the file (``params.lr.low``, ``starting_points[0].loss``) and whose line is that key's, or the nearest
enclosing key's, in the line table :func:`autoembed.yamlio.line_table` kept when the file was read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from autoembed.errors import AutoembedError

__all__ = ["Number", "Strict", "error_at", "fail", "located", "type_name"]


def fail(message: str, *at: str) -> PydanticCustomError:
    """A failed check in autoembed's words, placed at pydantic's loc plus ``at``; raise it in a validator."""
    return PydanticCustomError("autoembed", "{message}", {"message": message, "at": at})


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read true as 1.0
        raise PydanticCustomError("float_type", "not a number")
    return value


# A finite number; YAML's true and false are not numbers here.
Number = Annotated[float, pydantic.BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


class Strict(BaseModel):
    """One mapping of a file: unknown keys are errors; ``what`` names the mapping in messages."""

    model_config = ConfigDict(extra="forbid")
    what: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        # Here rather than pydantic's own errors, whose loc does not say which model a key was checked against.
        if isinstance(data, Mapping):
            fields = {f.alias or name: f for name, f in cls.model_fields.items()}
            for key in data:
                if key not in fields:
                    message = f"unknown key {key!r} in {cls.what}; expected one of: {', '.join(fields)}"
                    raise PydanticCustomError("unknown_key", "{message}", {"message": message, "at": (key,)})
            for key, f in fields.items():
                if f.is_required() and key not in data:
                    raise fail(f"{cls.what} needs {key!r}")
        return data


# What a failed pydantic check says; a type mismatch also names the type it got.
_SAYS = {
    "int_type": "must be an int",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "too_short": "must not be empty",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be an int >= {ge}",  # every lower bound in these files is on a count
}


def located(
    exc: ValidationError,
    data: Any,
    *,
    file: str | None,
    lines: dict[str, int],
    unions: Mapping[str, tuple[str, tuple[str, ...]]],
) -> AutoembedError:
    """The first error of ``exc``, an unknown key before the rest (it explains the rest), placed in the file.

    ``unions`` names, for each top-level key holding a ``type``-tagged union, the word for its tag and the tags it
    takes: ``{"sampler": ("sampler", ("tpe", "random"))}`` gives "unknown sampler 'cmaes'; expected one of: ...".
    """
    error = min(exc.errors(), key=lambda e: e["type"] != "unknown_key")
    kind, loc, value, ctx = error["type"], error["loc"], error.get("input"), error.get("ctx", {})
    path = _path(data, loc)
    if kind in ("autoembed", "unknown_key"):
        return error_at(file, lines, ctx["message"], ".".join([path, *ctx["at"]]).strip("."))
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        word, tags = unions[loc[0]]
        if kind == "union_tag_not_found":
            return error_at(file, lines, f"is missing 'type'; expected one of: {', '.join(tags)}", path)
        return error_at(file, lines, f"unknown {word} {ctx['tag']!r}; expected one of: {', '.join(tags)}", f"{path}.type")
    says = _SAYS.get(kind, error["msg"][:1].lower() + error["msg"][1:]).format(**ctx)
    got = f"{type_name(value)} {value!r}" if kind.endswith(("_type", "_parsing")) else repr(value)
    return error_at(file, lines, f"{says}, got {got}", path)


def _path(data: Any, loc: tuple[Any, ...]) -> str:
    """Pydantic's loc as a dotted path through the file, without the union tags pydantic adds."""
    path, node = "", data
    for part in loc:
        if isinstance(node, list) and isinstance(part, int):
            path, node = f"{path}[{part}]", node[part] if part < len(node) else None
        elif isinstance(node, Mapping) and part not in node and part == node.get("type"):
            continue
        else:
            path, node = f"{path}.{part}".lstrip("."), node.get(part) if isinstance(node, Mapping) else None
    return path


def error_at(file: str | None, lines: dict[str, int], message: str, path: str) -> AutoembedError:
    """The error at ``path``, on the line of the nearest key along it that the file has."""
    key = path
    while key and key not in lines:
        key = key[: max(key.rfind("."), key.rfind("["), 0)]
    return AutoembedError(message, file=file, line=lines.get(key), key=path or None)


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__

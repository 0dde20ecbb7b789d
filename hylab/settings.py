"""Typed settings: a dataclass per settings block, checked with one-line errors.

A family declares the plain settings of its modules (the keys that are not objects built from
their own `_target_`) as dataclasses in its torch-free `settings.py`, with ranges in field
metadata:

    @dataclass
    class DistillationSettings:
        mode: Literal["none", "hard", "soft"] = "none"
        alpha: float = field(default=0.5, metadata=between(0, 1))

and a `SCHEMAS` dict mapping the names of its config targets (a class or function name, as in
`_target_`) to the dataclass that types their settings. `parse_settings` turns a config node
into such a dataclass; `check_node` checks a node against its target's schema without building
anything (it imports only the target's `settings` module), so bad values stop a run before
torch is imported.
"""

import dataclasses
import importlib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from hylab.errors import UserError

T = TypeVar("T")
MISSING = dataclasses.MISSING


def between(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False) -> dict:
    """Field metadata: the value lies in [low, high] (a bound left None is open-ended)."""
    return {"range": (low, high, low_open, high_open)}


def positive() -> dict:
    return between(0, None, low_open=True)


def non_negative() -> dict:
    return between(0, None)


def _describe(annotation) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


class _Mismatch(Exception):
    pass


def _coerce(value, annotation):
    """The value as `annotation` wants it; _Mismatch when it is not one."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return value
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        items = [_coerce(item, args[0]) if args else item for item in value]
        return tuple(items) if origin is tuple or annotation is tuple else items
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        if len(args) == 2:
            return {_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return value  # parsed by the caller with the nested key
        raise _Mismatch
    return value


def _check_range(value, metadata, full_key: str) -> None:
    bounds = metadata.get("range")
    if bounds is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, high, low_open, high_open = bounds
    if isinstance(value, float) and math.isnan(value):
        raise UserError(f"{full_key}=nan is not allowed; give a number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right if high is not None else ')'}"
        raise UserError(f"{full_key}={value!r} is out of range; allowed: {interval}")


def _plain(node):
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def parse_settings(schema: type[T], node: Mapping | None, key: str, ignore: tuple[str, ...] = ()) -> T:
    """`node` as a `schema` dataclass; unknown keys, wrong types and out-of-range values raise a
    one-line UserError that names `key.<field>`, the value and what is allowed."""
    values = dict(_plain(node) or {})
    for name in ignore:
        values.pop(name, None)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{key}.{unknown[0]} is not a setting of {key}; allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(schema)
    parsed = {}
    for name, value in values.items():
        full_key = f"{key}.{name}"
        annotation = hints.get(name, Any)
        try:
            coerced = _coerce(value, annotation)
        except _Mismatch:
            raise UserError(f"{full_key}={value!r} is not allowed; expected {_describe(annotation)}") from None
        nested = _nested_dataclass(annotation)
        if nested is not None and isinstance(coerced, Mapping):
            coerced = parse_settings(nested, coerced, full_key)
        _check_range(coerced, fields[name].metadata, full_key)
        parsed[name] = coerced
    missing = [n for n, f in fields.items() if n not in parsed and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise UserError(f"{key}.{missing[0]} is required and was not given")
    try:
        return schema(**parsed)
    except (ValueError, TypeError) as err:
        raise UserError(f"{key}: {err}") from None


def _nested_dataclass(annotation):
    if dataclasses.is_dataclass(annotation):
        return annotation
    for option in get_args(annotation):
        if dataclasses.is_dataclass(option):
            return option
    return None


def schema_for(target: str) -> type | None:
    """The settings dataclass of a `_target_` (`pkg.module.Name`): `pkg.settings.SCHEMAS["Name"]`,
    or None. Only the settings module is imported; it (and the package's __init__) import no torch."""
    module_path, _, name = str(target).rpartition(".")
    package = module_path.rpartition(".")[0]
    if not package:
        return None
    try:
        module = importlib.import_module(f"{package}.settings")
    except ModuleNotFoundError as err:
        if err.name and f"{package}.settings".startswith(err.name):
            return None
        raise
    return getattr(module, "SCHEMAS", {}).get(name)


HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


def check_node(node: Mapping, key: str) -> None:
    """Check a config node that has a `_target_` (and the nodes inside it) against their schemas."""
    from omegaconf import DictConfig

    if not isinstance(node, (Mapping, DictConfig)):
        return
    target = node.get("_target_")
    schema = schema_for(target) if target else None
    object_keys = tuple(name for name, child in node.items() if _is_object(child))
    if schema is not None:
        parse_settings(schema, {k: v for k, v in node.items() if k not in HYDRA_KEYS}, key, ignore=object_keys)
    for name in object_keys:
        check_node(node[name], f"{key}.{name}")


def _is_object(child) -> bool:
    from omegaconf import DictConfig

    return isinstance(child, (Mapping, DictConfig)) and "_target_" in child

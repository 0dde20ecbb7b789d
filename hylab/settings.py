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
    if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[float, float]: a fixed length
        return f"a list of {len(args)} items (each {_describe(args[0])})"
    if origin in (list, tuple):
        return f"a list (each item {_describe(args[0])})" if args else "a list"
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
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_coerce(item, arg) for item, arg in zip(value, args))
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


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def parse_settings(schema: type[T], node: Mapping | None, key: str, ignore: tuple[str, ...] = (), allow_extra: bool = False) -> T:
    """`node` as a `schema` dataclass; unknown keys, wrong types and out-of-range values raise a
    one-line UserError that names `key.<field>`, the value and what is allowed. With
    `allow_extra`, keys the schema does not name are left alone (checked elsewhere, or not ours)."""
    node = node if node is not None else {}
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    given = [name for name in node.keys() if name not in ignore]
    unknown = sorted(set(given) - set(fields))
    if unknown and not allow_extra:
        raise UserError(f"{_join(key, unknown[0])} is not a setting of {key or 'the run'}; allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(schema)
    parsed = {}
    for name in given:
        if name not in fields:
            continue
        value = _plain(node[name])
        full_key = _join(key, name)
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
        raise UserError(f"{_join(key, missing[0])} is required and was not given")
    try:
        return schema(**parsed)
    except (ValueError, TypeError) as err:
        raise UserError(f"{key or 'config'}: {err}") from None


def _nested_dataclass(annotation):
    if dataclasses.is_dataclass(annotation):
        return annotation
    for option in get_args(annotation):
        if dataclasses.is_dataclass(option):
            return option
    return None


# Schemas of library targets (torch optimizers, Lightning callbacks), keyed by the full `_target_`;
# filled by hylab/schemas.py. A library's own modules are never imported to find a schema.
LIBRARY_SCHEMAS: dict[str, type] = {}


def _is_project_package(name: str) -> bool:
    from hylab.resolvers import PROJECT_ROOT

    return (PROJECT_ROOT / name / "__init__.py").is_file()


def schema_for(target: str) -> type | None:
    """The settings dataclass of a `_target_` (`pkg.sub.module.Name`): for the project's own
    targets `SCHEMAS["Name"]` of the nearest `settings.py` up the package path (`pkg.sub.settings`,
    then `pkg.settings`), for a library's the LIBRARY_SCHEMAS entry; else None. Only settings
    modules are imported; they (and their packages' __init__) import no torch."""
    target = str(target)
    if not _is_project_package(target.split(".", 1)[0]):
        import hylab.schemas  # noqa: F401  (fills LIBRARY_SCHEMAS)

        return LIBRARY_SCHEMAS.get(target)
    module_path, _, name = target.rpartition(".")
    for module in _settings_modules(module_path):
        if name in getattr(module, "SCHEMAS", {}):
            return module.SCHEMAS[name]
    return None


def _settings_modules(module_path: str):
    """The `settings` modules up the package path of `module_path`, nearest first."""
    parts = module_path.split(".")[:-1] or module_path.split(".")
    while parts:
        candidate = ".".join(parts) + ".settings"
        try:
            yield importlib.import_module(candidate)
        except ModuleNotFoundError as err:
            if not (err.name and candidate.startswith(err.name)):
                raise
        parts.pop()


def block_readers(tasks: Mapping) -> dict:
    """The top-level settings blocks the config's tasks read (`generation`, `serve`, ...): the
    `BLOCKS` of the settings modules up each task's package path, merged. A reader is a schema
    dataclass or a function `(node, key) -> settings`. Only settings modules are imported."""
    readers: dict = {}
    for entry in tasks.values():
        module_path = str(entry).partition(":")[0]
        if not _is_project_package(module_path.split(".", 1)[0]):
            continue
        for module in _settings_modules(module_path):
            for key, reader in getattr(module, "BLOCKS", {}).items():
                readers.setdefault(key, reader)
    return readers


def read_block(reader, node, key: str):
    """`node` (a top-level block) through its reader (see block_readers)."""
    if dataclasses.is_dataclass(reader):
        return parse_settings(reader, node, key)
    return reader(node, key)


def check_blocks(cfg: Mapping) -> None:
    """Every top-level settings block a task of this config reads, checked where the config has it."""
    for key, reader in block_readers(cfg.get("tasks") or {}).items():
        node = cfg.get(key)
        if node is not None:
            read_block(reader, node, key)


HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_", "_training_")  # _training_: hylab.instantiate


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

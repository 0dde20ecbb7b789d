"""Each setting has one home: its schema's default. A constructor that a config builds may only
repeat that default (the settings check runs on the config before torch; the constructor then
receives the checked values), never hold another one."""

import dataclasses
import importlib
import inspect
import re

from tests.helpers import ROOT

LIBRARIES = ("torch.", "lightning.", "hydra", "timm.", "optuna.", "builtins.")


def config_targets() -> list[str]:
    found = set()
    for path in (ROOT / "conf").rglob("*.yaml"):
        found |= set(re.findall(r"_target_:\s*([\w.]+)", path.read_text()))
    return sorted(target for target in found if not target.startswith(LIBRARIES))


def schema_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return inspect.Parameter.empty


def same_default(constructor, schema) -> bool:
    if isinstance(constructor, tuple) and isinstance(schema, list):
        return list(constructor) == schema
    if constructor is None and (dataclasses.is_dataclass(schema) or schema in ([], {})):
        return True  # None stands for the schema's own default block (parsed from an empty node)
    return constructor == schema


def test_every_constructor_default_is_its_schemas_default():
    from hylab.settings import schema_for

    drifted = []
    for target in config_targets():
        schema = schema_for(target)
        if schema is None:
            continue
        module, _, name = target.rpartition(".")
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        for field in dataclasses.fields(schema):
            parameter = parameters.get(field.name)
            if parameter is None or parameter.default is inspect.Parameter.empty:
                continue
            default = schema_default(field)
            if not same_default(parameter.default, default):
                drifted.append(f"{target}({field.name}={parameter.default!r}) but its schema {schema.__name__} says {default!r}")
    assert not drifted, "\n".join(drifted)

"""The dispatch table: `task=<name>` -> the function that runs it.

The table is the config group `tasks` (conf/tasks/): `trainer.yaml` holds fit, test, validate and
predict; a family adds its own tasks in `conf/tasks/<family>.yaml` and its experiments select
that file. Entries are "module:function" import paths, so reading the table imports nothing
heavy. A task takes the composed config and returns a TaskResult.
"""

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hylab.errors import UserError

TASK_FILES = Path(__file__).resolve().parent.parent / "conf" / "tasks"


@dataclass
class TaskResult:
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, str | float | None] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def tasks_elsewhere(name: str) -> list[str]:
    """The task files of conf/tasks/ that register `name` (for the error message)."""
    import yaml

    found = []
    for path in sorted(TASK_FILES.glob("*.yaml")):
        if name in (yaml.safe_load(path.read_text()) or {}):
            found.append(path.stem)
    return found


def check_task(name: str, table: Mapping[str, str]) -> None:
    if name in table:
        return
    elsewhere = tasks_elsewhere(name)
    hint = f"; it comes with tasks={elsewhere[0]} (an experiment of that family selects it)" if elsewhere else ""
    raise UserError(f"task={name!r} is not a task of this config; choose one of: {', '.join(sorted(table))}{hint}")


def resolve_task(name: str, table: Mapping[str, str]) -> Callable:
    check_task(name, table)
    module_name, function_name = str(table[name]).split(":")
    return getattr(importlib.import_module(module_name), function_name)

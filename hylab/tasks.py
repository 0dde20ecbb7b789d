"""The dispatch table: `task=<name>` -> the function that runs it.

A task takes the composed config and returns a TaskResult. Trainer tasks live in
hylab/trainer_tasks.py; a family that needs a task which is not a Trainer loop (training a
tokenizer, chatting with a checkpoint) registers it here. Entries are import paths, so reading
the table imports nothing heavy.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from hylab.errors import UserError

TASKS: dict[str, str] = {
    "fit": "hylab.trainer_tasks:fit",
    "test": "hylab.trainer_tasks:test",
    "validate": "hylab.trainer_tasks:validate",
    "predict": "hylab.trainer_tasks:predict",
    "train_tokenizer": "lightning_modules.gpt_tasks:train_tokenizer",
    "generate": "lightning_modules.gpt_tasks:generate_text",
    "chat": "lightning_modules.gpt_tasks:chat",
    "ris_classical": "lightning_modules.ris_baseline:classical",
}


@dataclass
class TaskResult:
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, str | float | None] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def check_task(name: str) -> None:
    if name not in TASKS:
        raise UserError(f"task={name!r} is not a task; choose one of: {', '.join(sorted(TASKS))}")


def resolve_task(name: str) -> Callable:
    check_task(name)
    module_name, function_name = TASKS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)

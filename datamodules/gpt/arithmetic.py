"""Arithmetic word problems, made procedurally, with answers that can be checked: SFT conversations
that use the Python tool (or answer directly), and problem sets for reinforcement learning.

    user:       Mia has 47 marbles and buys 38 more. How many marbles does Mia have now?
    assistant:  <|python_start|>47 + 38<|python_end|><|output_start|>85<|output_end|>The answer is 85.

A problem is drawn from a template (one or two operations among +, -, *, exact //) by a seeded
random generator: problem i of split s is always the same. The held-out split uses other seeds,
and any held-out question that also occurs in the training split is dropped.
"""

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from datamodules.gpt.chat import ConversationSet, render_conversation
from datamodules.gpt.datamodule import TokenDataModule
from hylab.errors import UserError

NAMES = ("Mia", "Noah", "Ava", "Liam", "Zoe", "Omar", "Lena", "Ivan", "Sara", "Theo", "Nina", "Ravi")
ITEMS = ("apples", "marbles", "stickers", "books", "coins", "shells", "cards", "pencils", "stamps", "eggs")
SPLIT_SEEDS = {"train": 0, "val": 1_000_003, "test": 2_000_003}
TRAIN_CHECK = 20_000  # how many training problems a held-out question is checked against


@dataclass
class Problem:
    question: str
    expression: str  # Python that computes the answer
    answer: int


def _templates(r: random.Random, max_operand: int):
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b, c = (r.randint(2, max_operand) for _ in range(3))
    small = r.randint(2, 12)
    hi, lo = max(a, b), min(a, b)
    given, taken = min(c, small * a), min(c, a + b)  # answers stay >= 0
    return [
        (f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?", f"{a} + {b}"),
        (f"{name} had {hi} {item} and gave {lo} away. How many {item} are left?", f"{hi} - {lo}"),
        (f"A box holds {a} {item}. How many {item} are in {small} boxes?", f"{a} * {small}"),
        (f"{a * small} {item} are shared equally by {small} friends. How many {item} does each friend get?", f"{a * small} // {small}"),
        (f"{name} buys {small} packs of {a} {item} and gives away {given}. How many {item} does {name} have?", f"{small} * {a} - {given}"),
        (f"{name} has {a} {item}, finds {b} and then {c} more. How many {item} are there in total?", f"{a} + {b} + {c}"),
        (f"What is {a} times {b}?", f"{a} * {b}"),
        (f"What is {a} plus {b} minus {taken}?", f"{a} + {b} - {taken}"),
    ]


def make_problem(seed: int, max_operand: int = 99) -> Problem:
    r = random.Random(seed)
    question, expression = r.choice(_templates(r, max_operand))
    return Problem(question, expression, int(eval(expression)))  # our own arithmetic string


def make_problems(split: str, count: int, max_operand: int = 99) -> list[Problem]:
    """`count` problems of a split; held-out splits leave out questions of the training split."""
    base = SPLIT_SEEDS[split]
    problems = [make_problem(base + i, max_operand) for i in range(count)]
    if split != "train":
        seen = {p.question for p in make_problems("train", TRAIN_CHECK, max_operand)}
        problems = [p for p in problems if p.question not in seen]
    return problems


def conversation(problem: Problem, tool: bool) -> list[dict]:
    """The SFT conversation: with the tool the assistant writes the expression, reads the output and
    answers; without it, it answers at once."""
    parts = [{"type": "text", "text": f"The answer is {problem.answer}."}]
    if tool:
        parts = [{"type": "python", "text": problem.expression}, {"type": "output", "text": str(problem.answer)}, *parts]
    return [{"role": "user", "content": problem.question}, {"role": "assistant", "content": parts}]


NUMBER = re.compile(r"-?\d+")


def extract_answer(text: str) -> int | None:
    """The last integer of the reply's text (tool code and output are not part of it)."""
    found = NUMBER.findall(text.replace(",", ""))
    return int(found[-1]) if found else None


def reward(problem: Problem, text: str) -> float:
    return float(extract_answer(text) == problem.answer)


class ProblemSet:
    """Problems as a map-style dataset; a batch is a list of problems."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> Problem:
        return self.problems[index]

    @staticmethod
    def collate(rows: list[Problem]) -> list[Problem]:
        return rows


class _FromCheckpoint(TokenDataModule):
    def __init__(self, tokenizer_from: str | None, batch_size: int, eval_batch_size: int | None, num_workers: int, base: dict | None = None):
        super().__init__(batch_size, eval_batch_size, num_workers)
        from lightning_modules.gpt.checkpoint import resolve_init_from

        tokenizer_from = resolve_init_from(tokenizer_from, base)
        if not tokenizer_from:
            raise UserError("arithmetic data uses the tokenizer of the checkpoint it trains: set model.init_from=<a GPT checkpoint>")
        from lightning_modules.gpt.checkpoint import read_gpt_checkpoint

        self.tokenizer = read_gpt_checkpoint(tokenizer_from, key="model.init_from").tokenizer


class ArithmeticChatDataModule(_FromCheckpoint):
    """SFT on arithmetic word problems, answered with the tool (`tool: true`) or directly."""

    def __init__(self, tokenizer_from: str | None = None, tool: bool = True, num_train: int = 20000, num_val: int = 200,
                 max_operand: int = 99, sequence_len: int = 128, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 0, base: dict | None = None):
        super().__init__(tokenizer_from, batch_size, eval_batch_size, num_workers, base)
        self.save_hyperparameters(logger=False)
        if tool and not self.tokenizer.has_tools:
            raise UserError(
                f"data.tool=true needs a tokenizer with the tool tokens (version 2), and model.init_from={tokenizer_from} "
                "has a version-1 tokenizer: train its base again, or set data.tool=false"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        for split, count in (("train", hp.num_train), ("val", hp.num_val)):
            rendered = [render_conversation(self.tokenizer, conversation(p, hp.tool)) for p in make_problems(split, count, hp.max_operand)]
            self.datasets[split] = ConversationSet(rendered, hp.sequence_len, self.tokenizer.bos_id)


class ArithmeticProblemDataModule(_FromCheckpoint):
    """Problems (not conversations) for reinforcement learning: the module samples the answers."""

    def __init__(self, tokenizer_from: str | None = None, num_train: int = 20000, num_val: int = 100, max_operand: int = 99,
                 sequence_len: int = 128, batch_size: int = 4, eval_batch_size: int | None = None, num_workers: int = 0,
                 base: dict | None = None):
        super().__init__(tokenizer_from, batch_size, eval_batch_size, num_workers, base)
        self.save_hyperparameters(logger=False)

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            hp = self.hparams
            self.datasets = {split: ProblemSet(make_problems(split, count, hp.max_operand))
                             for split, count in (("train", hp.num_train), ("val", hp.num_val), ("test", hp.num_val))}

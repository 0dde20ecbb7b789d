"""Reinforcement learning on verifiable answers (experiment=gpt_rl), as nanochat's chat_rl does on
GSM8K, here on the arithmetic word problems of datamodules/gpt/arithmetic.py.

Each training step takes a batch of problems and samples `samples_per_problem` answers to each
(with the Python tool). The reward is 1 when the last integer of the answer's text is the right
one, else 0. With the group's mean as baseline, advantage A_i = r_i - mean_j r_j, and the loss is
REINFORCE over the sampled tokens (tool output tokens are injected, not sampled: left out):

    loss = - sum_i A_i * sum_t log p(y_it | y_i<t, x) / sum_i |y_i|

(on-policy, one update per batch: no importance ratio, no clipping, no KL term). Validation
samples `eval_samples` answers per held-out problem and logs pass@1 and pass@k (the unbiased
estimator of Chen et al. 2021, `pass_at_k`), and greedy accuracy.
"""

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from datamodules.gpt.arithmetic import Problem, reward
from datamodules.gpt.chat import render_for_reply
from hylab.errors import UserError
from lightning_modules.best_so_far import BestSoFar
from lightning_modules.gpt.module import GPTLanguageModel
from lightning_modules.gpt.tools import run_in_sandbox, sample_with_tools, text_of


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k answers drawn from n, c of them correct, is correct) = 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def cached_tool(wall_s: float = 3.0, memory_mb: int = 256):
    """The sandboxed tool with a memory of code -> output: answers to one problem often repeat
    the same expression. (Right for pure code like arithmetic, not for code that reads time or files.)
    Without a sandbox this stops in one line: rewards from a tool that never runs would be noise."""
    from lightning_modules.gpt.sandbox import run_python

    probe = run_python("pass")
    if probe.status == "unavailable":
        raise UserError(f"tool calls run in the sandbox: {probe.error}")
    return functools.lru_cache(maxsize=65536)(functools.partial(run_in_sandbox, wall_s=wall_s, memory_mb=memory_mb))


def prompt_of(tokenizer, problem: Problem) -> list[int]:
    return render_for_reply(tokenizer, [{"role": "user", "content": problem.question}])


def evaluate_problems(net, tokenizer, problems: Sequence[Problem], samples: int, temperature: float, top_k: int | None,
                      max_new_tokens: int, run_tool, seed: int = 0) -> dict[str, float]:
    """pass@1 and pass@samples over `samples` answers per problem at `temperature`, greedy accuracy,
    and how often the answers called the tool."""
    totals = {"pass@1": 0.0, f"pass@{samples}": 0.0, "greedy_acc": 0.0, "tool_use": 0.0}
    for i, problem in enumerate(problems):
        prompt = prompt_of(tokenizer, problem)
        rows = sample_with_tools(net, tokenizer, prompt, max_new_tokens, num_samples=samples, temperature=temperature,
                                 top_k=top_k, seed=seed + i, run_tool=run_tool)
        correct = sum(reward(problem, text_of(tokenizer, row)) for row in rows)
        totals["pass@1"] += pass_at_k(samples, int(correct), 1)
        totals[f"pass@{samples}"] += pass_at_k(samples, int(correct), samples)
        totals["tool_use"] += sum(row.tool_calls > 0 for row in rows) / samples
        (greedy,) = sample_with_tools(net, tokenizer, prompt, max_new_tokens, temperature=0.0, run_tool=run_tool)
        totals["greedy_acc"] += reward(problem, text_of(tokenizer, greedy))
    return {name: value / max(1, len(problems)) for name, value in totals.items()}


class GPTRLModel(GPTLanguageModel):
    """A chat GPT (from `init_from`) trained by REINFORCE with a group-mean baseline."""

    def __init__(self, net, matrix_optimizer, embedding_optimizer, samples_per_problem: int = 8,
                 max_new_tokens: int = 48, temperature: float = 1.0, top_k: int | None = None,
                 eval_samples: int = 8, tool_wall_s: float = 3.0, **module_settings):
        super().__init__(net, matrix_optimizer, embedding_optimizer, **module_settings)
        self.rl = dict(samples=samples_per_problem, max_new_tokens=max_new_tokens, temperature=temperature,
                       top_k=top_k, eval_samples=eval_samples)
        self.tool = cached_tool(tool_wall_s)
        self.tokenizer = None
        self.val_problems: list[Problem] = []
        # the module's val/bpb best, and pass@1's under the name its checkpoints hold
        self.best = BestSoFar({**self.best.modes, "val/pass@1": "max"}, attributes={"val/pass@1": "val_pass_best"}).add_to(self)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.tokenizer = self.trainer.datamodule.tokenizer

    def training_step(self, batch: list[Problem], batch_idx: int) -> torch.Tensor:
        tok, rl = self.tokenizer, self.rl
        sequences, targets, advantages, rewards, solved = [], [], [], [], []
        for problem in batch:
            prompt = prompt_of(tok, problem)
            rows = sample_with_tools(self.net, tok, prompt, rl["max_new_tokens"], num_samples=rl["samples"],
                                     temperature=rl["temperature"], top_k=rl["top_k"], run_tool=self.tool)
            r = torch.tensor([reward(problem, text_of(tok, row)) for row in rows])
            rewards.append(r.mean())
            solved.append(float(r.max()))
            for row, advantage in zip(rows, (r - r.mean()).tolist()):
                sequences.append(prompt + row.tokens)
                # targets[j] is token j + 1: the prompt is context; forced (tool output) tokens are not trained
                targets.append([-1] * (len(prompt) - 1) + [-1 if forced else t for t, forced in zip(row.tokens, row.forced_mask)])
                advantages.append(advantage)
        width = max(len(s) for s in sequences) - 1
        inputs = torch.full((len(sequences), width), tok.bos_id, dtype=torch.long, device=self.device)
        target = torch.full((len(sequences), width), -1, dtype=torch.long, device=self.device)
        for i, (ids, tgt) in enumerate(zip(sequences, targets)):
            inputs[i, : len(ids) - 1] = torch.tensor(ids[:-1])
            target[i, : len(tgt)] = torch.tensor(tgt)
        self.batch_tokens = inputs.numel()
        logits = self(inputs)
        logp = -F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=-1, reduction="none").view_as(target)
        weights = torch.tensor(advantages, device=self.device)[:, None]
        loss = -(weights * logp).sum() / (target != -1).sum().clamp(min=1)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/reward", torch.stack(rewards).mean(), prog_bar=True)
        self.log(f"train/pass@{rl['samples']}", sum(solved) / len(solved))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_problems = []

    def validation_step(self, batch: list[Problem], batch_idx: int) -> None:
        self.val_problems.extend(batch)

    def _log_eval(self, stage: str) -> dict:
        rl = self.rl
        scores = evaluate_problems(self.net, self.tokenizer, self.val_problems, rl["eval_samples"], rl["temperature"],
                                   rl["top_k"], rl["max_new_tokens"], self.tool)
        for name, value in scores.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "pass@1")
        return scores

    def on_validation_epoch_end(self) -> None:
        scores = self._log_eval("val")
        self.best.update_and_log(self, {"val/pass@1": scores["pass@1"]}, prog_bar=False)

    def on_test_epoch_start(self) -> None:
        self.val_problems = []

    def test_step(self, batch: list[Problem], batch_idx: int) -> None:
        self.val_problems.extend(batch)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")


def arithmetic_eval(cfg) -> "TaskResult":
    """task=arithmetic_eval ckpt_path=...: pass@1 / pass@k / greedy accuracy on held-out problems
    (settings: `+arithmetic_eval.<key>=`, see ArithmeticEvalSettings)."""
    import json
    import time
    from dataclasses import asdict
    from pathlib import Path

    from datamodules.gpt.arithmetic import make_problems
    from hylab.records import atomic_write_text
    from hylab.settings import parse_settings
    from hylab.tasks import TaskResult
    from lightning_modules.gpt.settings import ArithmeticEvalSettings
    from lightning_modules.gpt.tasks import load_for_sampling

    net, tokenizer = load_for_sampling(cfg)
    node = cfg.get("arithmetic_eval")
    s = parse_settings(ArithmeticEvalSettings, node, "arithmetic_eval") if node is not None else ArithmeticEvalSettings()
    problems = make_problems(s.split, s.problems, s.max_operand)
    run_tool = cached_tool() if s.tools and tokenizer.has_tools else None
    started = time.perf_counter()
    scores = evaluate_problems(net, tokenizer, problems, s.samples, s.temperature, s.top_k, s.max_new_tokens, run_tool, s.seed)
    metrics = {f"arithmetic/{name}": value for name, value in scores.items()}
    metrics["arithmetic/problems"] = len(problems)
    metrics["arithmetic/seconds"] = time.perf_counter() - started
    path = Path(cfg.paths.output_dir) / "arithmetic_eval.json"
    atomic_write_text(path, json.dumps({"settings": asdict(s), "checkpoint": str(cfg.ckpt_path), "metrics": metrics}, indent=2) + "\n")
    print(" ".join(f"{k.split('/')[1]}={v:.3f}" for k, v in metrics.items()), flush=True)
    return TaskResult(metrics=metrics, checkpoints={"evaluated": str(cfg.ckpt_path)}, extra={"results": str(path)})

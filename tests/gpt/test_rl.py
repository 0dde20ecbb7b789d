"""Tool-use SFT data and RL on verifiable answers: the problems, their rendering, pass@k, and
experiment=gpt_sft data=gpt_arithmetic / experiment=gpt_rl end to end on a tiny base."""

import math

import pytest

from datamodules.gpt.arithmetic import conversation, extract_answer, make_problem, make_problems, reward
from datamodules.gpt.chat import render_conversation
from datamodules.gpt.tokenizer import OUTPUT_END, OUTPUT_START, PYTHON_START
from lightning_modules.gpt.rl import pass_at_k
from tests.gpt.serving import tiny_model
from tests.gpt.test_runs import tiny_base
from tests.helpers import run_in_process


def test_problems_are_reproducible_and_their_answers_right():
    assert make_problem(7) == make_problem(7)
    for problem in make_problems("train", 300):
        assert eval(problem.expression) == problem.answer and problem.answer >= 0
        assert all(part in problem.question for part in problem.expression.replace("//", " ").split() if part.isdigit())


def test_held_out_questions_are_not_in_training():
    train = {p.question for p in make_problems("train", 20000)}
    held_out = make_problems("test", 500)
    assert len(held_out) > 400 and not train & {p.question for p in held_out}


def test_answer_extraction_and_reward():
    problem = make_problem(3)
    assert extract_answer("The answer is 1,204.") == 1204 and extract_answer("no idea") is None
    assert reward(problem, f"I think {problem.answer + 1}, no: {problem.answer}.") == 1.0
    assert reward(problem, "The answer is") == 0.0


def test_tool_conversation_trains_on_the_code_not_on_the_output():
    _, tok = tiny_model()
    problem = make_problem(1)
    ids, mask = render_conversation(tok, conversation(problem, tool=True))
    start, end = ids.index(tok.id_of(OUTPUT_START)), ids.index(tok.id_of(OUTPUT_END))
    assert set(mask[start : end + 1]) == {0} and mask[ids.index(tok.id_of(PYTHON_START))] == 1
    assert tok.decode(ids[start + 1 : end]) == str(problem.answer)
    direct, _ = render_conversation(tok, conversation(problem, tool=False))
    assert tok.id_of(PYTHON_START) not in direct


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(8, 0, 1) == 0 and pass_at_k(8, 8, 1) == 1 and pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 1, 8) == 1 and pass_at_k(8, 2, 4) == pytest.approx(1 - math.comb(6, 4) / math.comb(8, 4))


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gpt_rl_data")
    _, record = run_in_process([*tiny_base(data_dir), "data.sequence_len=128", "trainer.max_steps=2", "trainer.val_check_interval=2"], tmp_path_factory.mktemp("base") / "run")
    return record["checkpoints"]["last"]


@pytest.mark.slow
def test_tool_sft_then_rl_end_to_end(base_checkpoint, tmp_path):
    small = ["data.num_train=64", "data.num_val=4", "data.batch_size=4", "data.sequence_len=48", "callbacks.progress_bar=null"]
    _, sft = run_in_process(["experiment=gpt_sft", "data=gpt_arithmetic", f"model.init_from={base_checkpoint}", *small,
                             "trainer.max_steps=2", "trainer.val_check_interval=2"], tmp_path / "sft")
    assert sft["status"] == "completed" and sft["metrics"]["val/bpb"] > 0
    rl_overrides = ["experiment=gpt_rl", f"model.init_from={sft['checkpoints']['last']}", *small, "data.batch_size=2",
                    "model.samples_per_problem=3", "model.eval_samples=2", "model.max_new_tokens=8",
                    "trainer.max_steps=2", "trainer.val_check_interval=2"]
    _, rl = run_in_process(rl_overrides, tmp_path / "rl")
    assert rl["status"] == "completed"
    assert {"train/reward", "val/pass@1", "val/pass@2", "val/greedy_acc", "val/pass@1_best"} <= set(rl["metrics"])
    assert 0 <= rl["metrics"]["val/pass@1"] <= rl["metrics"]["val/pass@2"] <= 1
    assert rl["optimized_metric"]["name"] == "val/pass@1_best"


def test_tool_sft_refuses_a_version_1_base(tmp_path):
    from hylab.errors import UserError
    from tests.helpers import ROOT

    legacy = str(ROOT / "tests" / "fixtures" / "legacy_gpt_tiny.ckpt")
    with pytest.raises(UserError, match="version-1 tokenizer"):
        run_in_process(["experiment=gpt_sft", "data=gpt_arithmetic", f"model.init_from={legacy}"], tmp_path / "run")


@pytest.mark.parametrize("overrides", [["experiment=gpt_rl"], ["experiment=gpt_sft", "data=gpt_arithmetic"]], ids=["rl", "tool_sft"])
def test_the_new_configs_pass_the_settings_check(overrides, tmp_path):
    from hylab.settings import check_node
    from tests.helpers import compose_run

    cfg = compose_run([*overrides, "model.init_from=x.ckpt"], tmp_path / "run")
    check_node(cfg.model, "model")
    check_node(cfg.data, "data")


def test_a_bad_rl_setting_fails_with_one_line(tmp_path):
    from hylab.errors import UserError
    from hylab.settings import check_node
    from tests.helpers import compose_run

    cfg = compose_run(["experiment=gpt_rl", "model.samples_per_problem=0"], tmp_path / "run")
    with pytest.raises(UserError, match="model.samples_per_problem=0 is out of range"):
        check_node(cfg.model, "model")

"""Every GPT experiment passes the settings check before torch is needed; a bad value fails with
one line naming the key."""

import pytest

from hylab.errors import UserError
from hylab.settings import check_node, parse_settings
from lightning_modules.gpt.settings import GenerationSettings
from tests.helpers import compose_run

GPT_EXPERIMENTS = ["gpt_tiny", "gpt_small", "gpt_sft", "gpt_speedrun"]


@pytest.mark.parametrize("experiment", GPT_EXPERIMENTS)
def test_every_gpt_experiment_passes_the_settings_check(experiment, tmp_path):
    cfg = compose_run([f"experiment={experiment}"], tmp_path / "run")
    check_node(cfg.model, "model")
    check_node(cfg.data, "data")
    check_node(cfg.callbacks.throughput, "callbacks.throughput")
    parse_settings(GenerationSettings, cfg.generation, "generation")


@pytest.mark.parametrize(
    ("experiment", "override", "message"),
    [
        ("gpt_tiny", "model.net.config.n_layer=abc", "model.net.config.n_layer='abc' is not allowed; expected an integer"),
        ("gpt_tiny", "model.net.config.n_head=3", "model.net.config: n_embd=128 must split into n_head=3 heads"),
        ("gpt_tiny", "model.scheduler.warmdown_ratio=2", "model.scheduler.warmdown_ratio=2.0 is out of range"),
        ("gpt_tiny", "data.sequence_len=0", "data.sequence_len=0 is out of range"),
        ("gpt_tiny", "data.source=wiki", "data.source='wiki' is not allowed; expected one of 'stdlib'"),
        ("gpt_sft", "+data.vocab_size=300", "data.vocab_size is not a setting of data"),
    ],
)
def test_a_bad_value_fails_with_one_line_naming_the_key(experiment, override, message, tmp_path):
    cfg = compose_run([f"experiment={experiment}", override], tmp_path / "run")
    with pytest.raises(UserError) as caught:
        check_node(cfg.data, "data")
        check_node(cfg.model, "model")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_generation_settings_come_from_the_config_only(tmp_path):
    cfg = compose_run(["experiment=gpt_tiny", "generation.temperature=-1"], tmp_path / "run")
    with pytest.raises(UserError, match=r"generation.temperature=-1.0 is out of range"):
        parse_settings(GenerationSettings, cfg.generation, "generation")
    cfg = compose_run(["experiment=gpt_tiny", "+generation.beams=4"], tmp_path / "run2")
    with pytest.raises(UserError, match="generation.beams is not a setting of generation"):
        parse_settings(GenerationSettings, cfg.generation, "generation")
    assert parse_settings(GenerationSettings, compose_run(["experiment=gpt_tiny"], tmp_path / "run3").generation, "generation").prompt == "def "


def test_the_throughput_callback_stays_out_of_the_training_hash(tmp_path):
    from hylab.store import training_hash

    base = training_hash(compose_run(["experiment=gpt_tiny"], tmp_path / "a"))
    assert training_hash(compose_run(["experiment=gpt_tiny", "callbacks.throughput.window_size=5"], tmp_path / "b")) == base
    assert training_hash(compose_run(["experiment=gpt_tiny", "callbacks.early_stopping.patience=6"], tmp_path / "c")) != base

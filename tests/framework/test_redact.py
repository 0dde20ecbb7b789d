"""Which settings count as secrets, and how their values leave records, command lines and Hydra's
override strings (hylab/redact.py)."""

from hylab.redact import REDACTED, is_secret_name, redact, redact_text


def test_names_that_end_in_a_secret_word_are_secrets():
    for name in ("token", "serve.token", "hub_token", "db.password", "PASSWD", "api_key", "openai_apikey", "aws.secret_key", "secret"):
        assert is_secret_name(name), name
    for name in ("token_file", "token_learner", "token_distillation", "max_tokens", "max_new_tokens", "tokenizer", "tokens_per_step"):
        assert not is_secret_name(name), name


def test_string_values_are_replaced_numbers_and_pointers_kept():
    record = {"serve": {"token": "abc", "token_file": "/run/secret", "max_new_tokens": 5}, "tokenizer/bytes_per_token": 3.1,
              "overrides": ["serve.token=abc", "+db.password='x y'", "trainer.max_steps=5"], "api_key": None}
    assert redact(record) == {"serve": {"token": REDACTED, "token_file": "/run/secret", "max_new_tokens": 5}, "tokenizer/bytes_per_token": 3.1,
                              "overrides": ["serve.token=<redacted>", "+db.password=<redacted>", "trainer.max_steps=5"], "api_key": None}


def test_command_lines_and_override_dirnames():
    assert redact_text("python run.py task=serve serve.token=abc serve.port=1") == "python run.py task=serve serve.token=<redacted> serve.port=1"
    assert redact_text("experiment=gpt_tiny,serve.token=abc,task=serve") == "experiment=gpt_tiny,serve.token=<redacted>,task=serve"
    assert redact_text("++x.hf_token='a b' y=2") == "++x.hf_token=<redacted> y=2"

"""Secrets never reach a file a run writes: a setting whose name says token, secret or password
(ends with it: `serve.token`, `+db.password`, `hf_api_key`) has its string value replaced in
metrics.json, .hydra/*.yaml, the config tree, the run store and the config embedded in
checkpoints. Names that only start with it (`token_file`, `token_learner`) and counts such as
`max_tokens` are kept."""

import re
from pathlib import Path

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"(^|[_-])(token|secret|password|passwd|api_?key|secret_?key|access_?key)$", re.IGNORECASE)

# `key=value` inside a command line, an override or Hydra's comma-joined override_dirname; the key
# possibly dotted and prefixed (+, ++, ~)
ASSIGNMENT = re.compile(r"(?P<key>[+~]{0,2}[A-Za-z_][\w.\-]*)=(?P<value>(\"[^\"]*\"|'[^']*'|[^\s,])*)")


def is_secret_name(name: str) -> bool:
    last = str(name).rsplit(".", 1)[-1].lower()
    return bool(SECRET_NAME.search(last))


def redact(tree):
    """A copy of a plain tree (dicts, lists, strings) with secret values replaced (a secret is a
    string: numbers such as a metric `tokenizer/bytes_per_token` are kept)."""
    if isinstance(tree, dict):
        return {k: (REDACTED if is_secret_name(k) and isinstance(v, str) else redact(v)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact(v) for v in tree]
    if isinstance(tree, str):
        return redact_text(tree)
    return tree


def redact_text(text: str) -> str:
    """`serve.token=abc` -> `serve.token=<redacted>` wherever it occurs (overrides, command lines)."""
    if "=" not in text:
        return text

    def replace(match: re.Match) -> str:
        key = match.group("key").lstrip("+~")
        return f"{match.group('key')}={REDACTED}" if is_secret_name(key) and match.group("value") else match.group(0)

    return ASSIGNMENT.sub(replace, text)


def redact_hydra_files(output_dir: Path) -> None:
    """Rewrite the .hydra/*.yaml Hydra saved at job start, when they hold a secret."""
    import yaml

    from hylab.records import atomic_write_text

    for path in sorted((Path(output_dir) / ".hydra").glob("*.yaml")):
        original = yaml.safe_load(path.read_text())
        cleaned = redact(original)
        if cleaned != original:
            atomic_write_text(path, yaml.safe_dump(cleaned, sort_keys=False))

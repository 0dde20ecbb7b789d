"""Conversations whose assistant turns hold tool calls, rendered with the tool tokens and a loss mask.

An assistant message's content is a string or a list of parts:

    [{"type": "python", "text": "47 + 38"}, {"type": "output", "text": "85"}, {"type": "text", "text": "The answer is 85."}]

renders as <|assistant_start|><|python_start|>47 + 38<|python_end|><|output_start|>85<|output_end|>
The answer is 85.<|assistant_end|>. The mask is 1 on what the model writes (text, code, the python
tokens, <|assistant_end|>) and 0 on the tool's output with its two tokens: at sampling time the
engine injects those, so the model is not trained to predict them.
"""

from collections.abc import Sequence

from datamodules.gpt.chat import check_roles
from datamodules.gpt.tokenizer import (
    ASSISTANT_END,
    ASSISTANT_START,
    OUTPUT_END,
    OUTPUT_START,
    PYTHON_END,
    PYTHON_START,
    USER_END,
    USER_START,
    GPTTokenizer,
)


def render_with_tools(tokenizer: GPTTokenizer, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """(ids, mask) of a conversation whose assistant contents may be lists of parts."""
    check_roles(messages)
    ids, mask = [tokenizer.bos_id], [0]

    def add(tokens: list[int], trained: int) -> None:
        ids.extend(tokens)
        mask.extend([trained] * len(tokens))

    for message in messages:
        if message["role"] == "user":
            add([tokenizer.id_of(USER_START), *tokenizer.encode(message["content"]), tokenizer.id_of(USER_END)], 0)
            continue
        add([tokenizer.id_of(ASSISTANT_START)], 0)
        content = message["content"]
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if part["type"] == "text":
                add(tokenizer.encode(part["text"]), 1)
            elif part["type"] == "python":
                add([tokenizer.id_of(PYTHON_START), *tokenizer.encode(part["text"]), tokenizer.id_of(PYTHON_END)], 1)
            elif part["type"] == "output":
                add([tokenizer.id_of(OUTPUT_START), *tokenizer.encode(part["text"]), tokenizer.id_of(OUTPUT_END)], 0)
            else:
                raise ValueError(f"unknown part type {part['type']!r}; use text, python or output")
        add([tokenizer.id_of(ASSISTANT_END)], 1)
    return ids, mask

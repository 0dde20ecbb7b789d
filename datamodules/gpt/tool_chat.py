"""Assistant turns that hold tool calls: a list of parts instead of a string.

    [{"type": "python", "text": "47 + 38"}, {"type": "output", "text": "85"}, {"type": "text", "text": "The answer is 85."}]

renders (chat.render_conversation) as <|assistant_start|><|python_start|>47 + 38<|python_end|>
<|output_start|>85<|output_end|>The answer is 85.<|assistant_end|>. The mask is 1 on what the model
writes (text, code, the two python tokens, <|assistant_end|>) and 0 on the tool's output with its
two tokens: at sampling time the engine injects those, so the model is not trained to predict them.
"""

from collections.abc import Callable, Sequence

from datamodules.gpt.tokenizer import OUTPUT_END, OUTPUT_START, PYTHON_END, PYTHON_START, GPTTokenizer


def add_parts(tokenizer: GPTTokenizer, parts: Sequence[dict], add: Callable[[list[int], int], None]) -> None:
    """Hand each part's tokens and their mask value to `add(tokens, trained)`."""
    for part in parts:
        kind, text = part["type"], part["text"]
        if kind == "text":
            add(tokenizer.encode(text), 1)
        elif kind == "python":
            add([tokenizer.id_of(PYTHON_START), *tokenizer.encode(text), tokenizer.id_of(PYTHON_END)], 1)
        elif kind == "output":
            add([tokenizer.id_of(OUTPUT_START), *tokenizer.encode(text), tokenizer.id_of(OUTPUT_END)], 0)
        else:
            raise ValueError(f"unknown part type {kind!r}; use text, python or output")

"""Chat data: conversations rendered with the special tokens, a loss mask on the assistant's tokens,
and an SFT set made offline from the Python standard library's docstrings.

    <|bos|><|user_start|>What does `json.dumps` do?<|user_end|><|assistant_start|>Serialize ``obj``
    to a JSON formatted ``str``.<|assistant_end|>

Only the assistant's reply and its <|assistant_end|> are trained on (mask 1); the rest is context.
An assistant turn may also be a list of parts with tool calls (tool_chat.py).

The SFT set: each public function, class and method with a docstring in the stdlib's .py files
(parsed with `ast`, nothing imported) gives a question about its dotted name, answered with the
first paragraph of its docstring; each module docstring gives "What is the `X` module for?".
Question wordings rotate by a hash of the name; a third of the conversations have two turns (two
names of one module). The held-out split is by module file, like the text corpora.
"""

import ast
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datamodules.gpt.corpus import Document
from datamodules.gpt.tokenizer import ASSISTANT_END, ASSISTANT_START, USER_END, USER_START, GPTTokenizer

Message = dict[str, str]  # {"role": "user" | "assistant", "content": ...}
QUESTIONS = ("What does `{}` do?", "Explain `{}`.", "What is `{}` for?", "Tell me about `{}`.")
MODULE_QUESTION = "What is the `{}` module for?"
MIN_ANSWER, MAX_ANSWER = 20, 600  # characters of a usable first docstring paragraph


def check_roles(messages: Sequence[Message]) -> None:
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise ValueError(f"message {i} has role {message.get('role')!r}; conversations alternate user, assistant, ...")


def render_conversation(tokenizer: GPTTokenizer, messages: Sequence[Message]) -> tuple[list[int], list[int]]:
    """(ids, mask): the conversation as tokens, mask 1 on what the assistant says (and its end token)."""
    check_roles(messages)
    ids, mask = [tokenizer.bos_id], [0]

    def add(tokens: list[int], trained: int) -> None:
        ids.extend(tokens)
        mask.extend([trained] * len(tokens))

    for message in messages:
        if message["role"] == "user":
            add([tokenizer.id_of(USER_START), *tokenizer.encode(message["content"]), tokenizer.id_of(USER_END)], 0)
        elif isinstance(message["content"], str):
            add([tokenizer.id_of(ASSISTANT_START)], 0)
            add([*tokenizer.encode(message["content"]), tokenizer.id_of(ASSISTANT_END)], 1)
        else:  # a list of text / python / output parts (tool_chat.py)
            from datamodules.gpt.tool_chat import add_parts

            add([tokenizer.id_of(ASSISTANT_START)], 0)
            add_parts(tokenizer, message["content"], add)
            add([tokenizer.id_of(ASSISTANT_END)], 1)
    return ids, mask


def render_for_reply(tokenizer: GPTTokenizer, messages: Sequence[Message]) -> list[int]:
    """The conversation so far (ending with the user's turn) followed by <|assistant_start|>."""
    ids, _ = render_conversation(tokenizer, messages)
    return [*ids, tokenizer.id_of(ASSISTANT_START)]


def first_paragraph(docstring: str) -> str:
    import inspect

    paragraph = inspect.cleandoc(docstring).split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines()).strip()


def documented_names(module: str, tree: ast.Module) -> list[tuple[str, str]]:
    """(dotted name, first docstring paragraph) for the public top-level functions and classes
    of a module and the public methods of its classes."""
    found = []

    def visit(body: list, prefix: str, depth: int) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                if doc:
                    found.append((f"{prefix}.{node.name}", first_paragraph(doc)))
                if isinstance(node, ast.ClassDef) and depth == 0:
                    visit(node.body, f"{prefix}.{node.name}", depth + 1)

    visit(tree.body, module, 0)
    return found


def module_name(document_name: str) -> str:
    path = Path(document_name)
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def docstring_conversations(documents: Sequence[Document]) -> list[list[Message]]:
    conversations = []
    for doc in documents:
        if not doc.name.endswith(".py"):
            continue
        try:
            tree = ast.parse(doc.text)
        except (SyntaxError, ValueError):
            continue
        module = module_name(doc.name)
        pairs = []
        module_doc = ast.get_docstring(tree)
        if module_doc:
            pairs.append((MODULE_QUESTION.format(module), first_paragraph(module_doc)))
        for name, answer in documented_names(module, tree):
            pairs.append((QUESTIONS[zlib.crc32(name.encode()) % len(QUESTIONS)].format(name), answer))
        pairs = [(q, a) for q, a in pairs if MIN_ANSWER <= len(a) <= MAX_ANSWER]
        i = 0
        while i < len(pairs):
            turns = 2 if i + 1 < len(pairs) and zlib.crc32(pairs[i][0].encode()) % 3 == 0 else 1
            messages = []
            for question, answer in pairs[i : i + turns]:
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            conversations.append(messages)
            i += turns
    return conversations


class ConversationSet(Dataset):
    """Rendered conversations, cut to sequence_len + 1 tokens; a batch is padded to its longest."""

    def __init__(self, rendered: list[tuple[list[int], list[int]]], sequence_len: int, pad_id: int):
        self.rows = [(ids[: sequence_len + 1], mask[: sequence_len + 1]) for ids, mask in rendered]
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.rows[index]

    def collate(self, rows: list) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs = ids[:-1]; targets = ids[1:] where the mask is 1, else -1 (no loss); padded."""
        width = max(len(ids) for ids, _ in rows) - 1
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(rows), width), -1, dtype=torch.long)
        for r, (ids, mask) in enumerate(rows):
            ids_t, mask_t = torch.tensor(ids), torch.tensor(mask, dtype=torch.bool)
            inputs[r, : len(ids) - 1] = ids_t[:-1]
            targets[r, : len(ids) - 1] = ids_t[1:].masked_fill(~mask_t[1:], -1)
        return inputs, targets

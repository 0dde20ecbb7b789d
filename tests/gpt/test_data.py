"""Corpora, the held-out split by document, token files, packing, DDP sampling, chat rendering."""

import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from datamodules.gpt.chat import ConversationSet, docstring_conversations, render_conversation, render_for_reply
from datamodules.gpt.corpus import Document, file_documents, python_docs_documents, split_chapters, split_documents
from datamodules.gpt.datamodule import TextDataModule
from datamodules.gpt.tokenizer import ASSISTANT_END, ASSISTANT_START, USER_END, USER_START
from hylab.errors import UserError

SMALL = dict(source="stdlib", max_bytes=60_000, vocab_size=300, tokenizer_train_bytes=30_000, sequence_len=16, batch_size=4)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory) -> TextDataModule:
    dm = TextDataModule(data_dir=str(tmp_path_factory.mktemp("data")), **SMALL)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def docs(n: int) -> list[Document]:
    return [Document(f"doc{i}.txt", f"text number {i} " * 10) for i in range(n)]


def test_split_is_by_whole_document_deterministic_and_stable():
    train, val = split_documents(docs(40), 0.1)
    assert len(val) == 4 and not {d.name for d in train} & {d.name for d in val}
    assert split_documents(list(reversed(docs(40))), 0.1) == (train, val)
    # adding documents never moves an old one from train into val or back
    train2, val2 = split_documents(docs(41), 0.1)
    old = {d.name for d in docs(40)}
    assert {d.name for d in train2} & old <= {d.name for d in train}
    with pytest.raises(UserError, match="at least 2"):
        split_documents(docs(1), 0.1)


def test_missing_corpora_say_how_to_install(tmp_path):
    with pytest.raises(UserError, match="apt-get install python3-doc"):
        python_docs_documents(tmp_path / "nowhere")
    with pytest.raises(UserError, match="does not exist"):
        file_documents([str(tmp_path / "nothing.txt")])
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("world")
    assert [d.text for d in file_documents([str(tmp_path)])] == ["hello", "world"]


def test_novels_split_into_chapters():
    book = "PERSUASION\n\nby Jane Austen\n\nChapter 1\n\nSir Walter.\n\nChapter 2\n\nMr Shepherd.\nCHAPTER III\nmore"
    chapters = split_chapters("Persuasion", book)
    assert [c.name for c in chapters] == ["Persuasion/001", "Persuasion/002", "Persuasion/003"]
    assert chapters[0].text.startswith("PERSUASION") and "Sir Walter" in chapters[0].text
    assert "".join(c.text for c in chapters) == book


def test_token_files_hold_each_document_after_a_bos(datamodule):
    tokens = np.memmap(datamodule.token_dir() / "val.bin", dtype=np.uint16, mode="r")
    val_docs = datamodule.val_documents
    expected = [t for d in val_docs for t in [datamodule.tokenizer.bos_id, *datamodule.tokenizer.encode(d.text)]]
    assert tokens.tolist() == expected
    x, y = datamodule.datasets["val"][1]
    assert torch.equal(x[1:], y[:-1]) and x.tolist() == expected[16:32] and y.tolist() == expected[17:33]


def test_preparation_is_cached_and_idempotent(datamodule):
    folder = datamodule.token_dir()
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = TextDataModule(data_dir=datamodule.hparams.data_dir, **SMALL)
    again.prepare_data()
    again.setup("fit")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert again.tokenizer.fingerprint() == datamodule.tokenizer.fingerprint()
    other = TextDataModule(data_dir=datamodule.hparams.data_dir, **{**SMALL, "vocab_size": 280})
    assert other.cache_dir() != datamodule.cache_dir()  # keyed by vocabulary size too


def test_dataset_pickles_without_the_token_array(datamodule):
    dataset = datamodule.datasets["train"]
    dataset[0]
    assert len(pickle.dumps(dataset)) < 1000
    assert torch.equal(pickle.loads(pickle.dumps(dataset))[3][0], dataset[3][0])


def test_lightning_injects_a_distributed_sampler(datamodule):
    """What Lightning does to the train loader under DDP (use_distributed_sampler=True)."""
    from lightning.pytorch.utilities.data import _update_dataloader

    loader = datamodule.train_dataloader()
    dataset = loader.dataset
    covered = set()
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        ranked = _update_dataloader(loader, sampler)
        rows = torch.cat([inputs for inputs, _ in ranked])
        indices = list(sampler)
        assert torch.equal(rows, torch.stack([dataset[i][0] for i in indices]))  # this rank's share, in order
        assert len(indices) == (len(dataset) + 1) // 2
        covered |= set(indices)
    assert covered == set(range(len(dataset)))


def test_too_short_split_is_a_user_error(tmp_path):
    dm = TextDataModule(data_dir=str(tmp_path), **{**SMALL, "sequence_len": 100_000})
    with pytest.raises(UserError, match="lower data.sequence_len"):
        dm.setup("fit")


def test_conversation_mask_covers_only_the_assistant(datamodule):
    tok = datamodule.tokenizer
    messages = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    ids, mask = render_conversation(tok, messages)
    assert ids == [tok.bos_id, tok.id_of(USER_START), *tok.encode("Hi?"), tok.id_of(USER_END),
                   tok.id_of(ASSISTANT_START), *tok.encode("Hello."), tok.id_of(ASSISTANT_END)]
    trained = [i for i, m in zip(ids, mask) if m]
    assert trained == [*tok.encode("Hello."), tok.id_of(ASSISTANT_END)]
    assert render_for_reply(tok, messages[:1])[-1] == tok.id_of(ASSISTANT_START)
    with pytest.raises(ValueError, match="alternate"):
        render_conversation(tok, [messages[1]])
    batch = ConversationSet([(ids, mask), (ids[:5], mask[:5])], 64, tok.bos_id)
    inputs, targets = batch.collate([batch[0], batch[1]])
    assert inputs.shape == targets.shape == (2, len(ids) - 1)
    assert targets[0][targets[0] >= 0].tolist() == trained and (targets[1] == -1).all()


def test_docstring_conversations_come_from_the_source():
    source = '''"""Tools for tea: brewing, steeping and pouring it well."""

def brew(leaves, water):
    """Brew leaves in hot water for the right number of minutes.

    Longer explanation that is not used.
    """

def _private():
    """Never asked about because it is private."""

class Pot:
    """A pot that holds tea for several cups at once."""
    def pour(self):
        """Pour one cup of tea from the pot, if any is left."""
'''
    conversations = docstring_conversations([Document("tea/__init__.py", source)])
    turns = [m for c in conversations for m in c]
    questions = [m["content"] for m in turns if m["role"] == "user"]
    answers = [m["content"] for m in turns if m["role"] == "assistant"]
    assert questions[0] == "What is the `tea` module for?"
    assert any("`tea.brew`" in q for q in questions) and any("`tea.Pot.pour`" in q for q in questions)
    assert "Brew leaves in hot water for the right number of minutes." in answers
    assert not any("_private" in q for q in questions) and not any("Longer explanation" in a for a in answers)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_token_file_is_moved_aside_and_rebuilt(tmp_path, damage, caplog):
    dm = TextDataModule(data_dir=str(tmp_path), **SMALL)
    dm.prepare_data()
    folder = dm.token_dir()
    train = folder / "train.bin"
    good = train.read_bytes()
    if damage == "truncate":
        train.write_bytes(good[: len(good) // 2])
    else:
        train.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])
    again = TextDataModule(data_dir=str(tmp_path), **SMALL)
    with caplog.at_level("WARNING", logger="hylab"):
        again.prepare_data()
    assert "is damaged" in caplog.text and "rebuilding it" in caplog.text
    assert train.read_bytes() == good  # rebuilt as it was
    (aside,) = folder.parent.glob(f"{folder.name}.corrupt-*")
    assert (aside / "train.bin").read_bytes() != good  # the damaged copy is kept, not deleted

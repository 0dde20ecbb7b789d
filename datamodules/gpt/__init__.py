"""Data of the GPT family.

    datamodule.py  TextDataModule (packed token windows), ChatDataModule (masked conversations)
    corpus.py      text corpora as named documents; the held-out split by document
    tokenizer.py   byte-level BPE, special tokens, bytes per token
    tokens.py      token files and PackedSequences
    chat.py        conversation rendering, the loss mask, the docstring SFT set
    settings.py    schemas of the DataModule targets
"""

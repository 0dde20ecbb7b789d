"""The GPT chat-model family (nanochat lineage): pre-training, chat fine-tuning, sampling.

    module.py      GPTLanguageModel, the LightningModule (loss, bits per byte, optimizers)
    nets.py        GPT, the plain nn.Module (rotary, QK-norm, ReLU², GQA, KV-cache decoding)
    losses.py      next-token cross-entropy with the chat loss mask
    metrics.py     BitsPerByte
    optim.py       Muon + AdamW stepped as one optimizer, the warm-up / warm-down schedule
    engine.py      KV cache, sampling, streaming decode
    checkpoint.py  the config + tokenizer a GPT checkpoint carries, and reading it back
    tasks.py       task=train_tokenizer, task=generate, task=chat
    export.py      task=export: a checkpoint as a Hugging Face folder (transformers' nanochat)
    callbacks.py   token throughput (tokens/s, FLOP/s, MFU)
    settings.py    GPTConfig and the schemas of the family's config targets

The data side (corpora, tokenizer, token files, chat rendering) is datamodules/gpt.
"""

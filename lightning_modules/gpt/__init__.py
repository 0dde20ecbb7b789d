"""The GPT chat-model family (nanochat lineage): pre-training, chat fine-tuning, sampling.

    module.py      GPTLanguageModel, the LightningModule (loss, bits per byte, optimizers)
    nets.py        GPT, the plain nn.Module (rotary, QK-norm, ReLU², GQA, KV-cache decoding)
    losses.py      next-token cross-entropy with the chat loss mask; the head + soft-cap + loss fused
    fused.py       ReLU² and rotary with hand-written backward passes (CPU speed, same values)
    metrics.py     BitsPerByte
    optim.py       Muon + AdamW stepped as one optimizer, the warm-up / warm-down schedule
    engine.py      KV cache, sampling, streaming decode
    tools.py       tool use while sampling (the model's Python calls, run in the sandbox)
    sandbox.py     untrusted Python (tool calls, HumanEval completions) in a bubblewrap sandbox
    checkpoint.py  the config + tokenizer a GPT checkpoint carries, and reading it back
    tasks.py       task=train_tokenizer, task=generate, task=chat
    pipeline.py    task=speedrun: tokenizer -> base model -> chat fine-tune -> eval -> report card
    rl.py          reinforcement learning on verifiable answers (experiment=gpt_rl)
    evaluation.py  task=eval: the CORE-proxy benchmarks on a checkpoint
    core_eval.py   likelihood scoring as DCLM's CORE does
    generative_eval.py  GSM8K (exact match) and HumanEval (pass@1)
    export.py      task=export: a checkpoint as a Hugging Face folder (transformers' nanochat)
    serve/         task=serve: a checkpoint behind HTTP with a chat page (its own __init__ lists its files)
    callbacks.py   token throughput (tokens/s, FLOP/s, MFU)
    settings.py    GPTConfig and the schemas of the family's config targets

The data side (corpora, tokenizer, token files, chat rendering) is datamodules/gpt.
"""

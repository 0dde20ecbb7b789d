"""The transformers side of the export test, run in a fresh offline process as a user would:

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -m tests.gpt.hf_side <export dir> <cases.json> <out.pt>

cases.json: {"prompts": [[ids]], "padded": [[ids]], "greedy": [[ids]], "new_tokens": n,
"chats": [{"messages": [...], "generation_prompt": bool, "sanitize": bool}], "texts": [str],
"pipeline_chat": [...], "pipeline_new_tokens": n}. out.pt holds what transformers computed.
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline


def main(folder: str, cases_path: str, out_path: str) -> None:
    cases = json.loads(open(cases_path).read())
    model = AutoModelForCausalLM.from_pretrained(folder).eval()  # no trust_remote_code: a native architecture
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = {"model_class": type(model).__name__, "dtype": str(model.dtype)}
    with torch.no_grad():
        out["logits"] = [model(torch.tensor([ids])).logits[0] for ids in cases["prompts"]]
        out["loss"] = model(torch.tensor([cases["prompts"][0]]), labels=torch.tensor([cases["prompts"][0]])).loss
        width = max(len(ids) for ids in cases["padded"])
        batch = tokenizer.pad({"input_ids": cases["padded"]}, padding="longest", return_tensors="pt")
        assert batch["input_ids"].shape[1] == width
        logits = model(**batch).logits
        out["padded_logits"] = [logits[i, width - len(ids):] for i, ids in enumerate(cases["padded"])]
    n = cases["new_tokens"]
    greedy = dict(do_sample=False, max_new_tokens=n, min_new_tokens=n, eos_token_id=None)  # n tokens, no stop
    out["greedy"] = [
        model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), **greedy)[0, len(ids):].tolist()
        for ids in cases["greedy"]
    ]
    batch = tokenizer.pad({"input_ids": cases["greedy"]}, padding="longest", return_tensors="pt")
    generated = model.generate(**batch, **greedy)  # left-padded
    out["greedy_batched"] = generated[:, batch["input_ids"].shape[1]:].tolist()
    out["chats"] = [
        tokenizer.apply_chat_template(chat["messages"], add_generation_prompt=chat["generation_prompt"], tokenize=True,
                                      return_dict=False, sanitize_control_tokens=chat["sanitize"])
        for chat in cases["chats"]
    ]
    out["texts"] = [tokenizer(text).input_ids for text in cases["texts"]]
    out["decoded"] = [tokenizer.decode(ids) for ids in out["texts"]]
    chat = pipeline("text-generation", model=folder)
    answer = chat(cases["pipeline_chat"], max_new_tokens=cases["pipeline_new_tokens"], do_sample=False)
    out["pipeline"] = answer[0]["generated_text"]
    torch.save(out, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])

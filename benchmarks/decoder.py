"""3. The mmgpt decoder against transformers' `GPT2LMHeadModel`, at mmgpt-tiny's sizes and at GPT-2 small's.

Both are built from random weights (seed 0) with the same sizes, the same tied embeddings, no dropout (mmgpt has
none; GPT-2's three 0.1 dropouts are set to 0) and the same attention: `torch.nn.functional
.scaled_dot_product_attention`, which mmgpt always calls and GPT-2 uses with `attn_implementation="sdpa"`
(transformers 5's default). mmgpt runs text-only: its image and audio encoders exist but are never called.

- generate tokens/s: greedy, batch 1, a PROMPT_TOKENS-token prompt, exactly `new` new tokens (min_new_tokens),
  the KV cache on (transformers' DynamicCache in both), prefill included.
- training step: forward with labels (next-token cross-entropy), backward, AdamW step, zero_grad.
"""

import time

from .common import Context, Figure, Result, interleaved, median

NAME = "decoder"
TITLE = "mmgpt decoder vs transformers GPT2LMHeadModel"
SIZES = {
    "mmgpt_tiny": dict(vocab_size=2048, n_embd=256, n_layer=6, n_head=8, n_positions=512),
    "gpt2_small": dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024),
}
SMOKE_SIZES = dict(vocab_size=320, n_embd=32, n_layer=2, n_head=4, n_positions=128)
TRAIN_BATCH = {"mmgpt_tiny": (8, 128), "gpt2_small": (2, 128)}  # (sequences, tokens each)
NEW_TOKENS = {"mmgpt_tiny": 128, "gpt2_small": 64}
REPEATS = {"mmgpt_tiny": 5, "gpt2_small": 3}
PROMPT_TOKENS = 16
LEARNING_RATE = 1e-4


def build(kind: str, sizes: dict):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from mmgpt.model import MMGPTConfig, MMGPTForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":
        config = GPT2Config(**sizes, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                            eos_token_id=0, pad_token_id=0, attn_implementation="sdpa")
        return GPT2LMHeadModel(config)
    config = MMGPTConfig(**sizes, dropout=0.0)
    return MMGPTForCausalLM(config)


def parameters(model, decoder_only: bool = False) -> int:
    """Distinct parameters (tied embeddings counted once); `decoder_only` leaves out mmgpt's encoders."""
    seen = {}
    for name, p in model.named_parameters():
        if decoder_only and ("image_encoder" in name or "audio_encoder" in name):
            continue
        seen[p.data_ptr()] = p.numel()
    return sum(seen.values())


def decode_rate(model, prompt, new: int) -> float:
    import torch

    model.eval()
    mask = torch.ones_like(prompt)
    started = time.perf_counter()
    output = model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                            do_sample=False, pad_token_id=0)
    seconds = time.perf_counter() - started
    assert output.shape[-1] - prompt.shape[-1] == new
    return new / seconds


def training_step(model, optimizer, batch) -> float:
    model.train()
    started = time.perf_counter()
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def compare(size: str, sizes: dict, smoke: bool) -> dict:
    import torch

    models = {kind: build(kind, sizes) for kind in ("mmgpt", "gpt2")}
    attention = {"mmgpt": "torch sdpa (called directly)", "gpt2": models["gpt2"].config._attn_implementation}
    generator = torch.Generator().manual_seed(0)
    low = 16  # mmgpt's special and placeholder ids (0-8) are avoided; they are not special to a text-only run
    prompt = torch.randint(low, sizes["vocab_size"], (1, PROMPT_TOKENS), generator=generator)
    new = 4 if smoke else NEW_TOKENS[size]
    repeats = 1 if smoke else REPEATS[size]
    batch_shape = (2, 16) if smoke else TRAIN_BATCH[size]
    batch = torch.randint(low, sizes["vocab_size"], batch_shape, generator=generator)

    decode = {kind: (lambda m=m: decode_rate(m, prompt, new)) for kind, m in models.items()}
    for run in decode.values():
        run()  # warm-up
    rates = interleaved(decode, repeats)

    optimizers = {kind: torch.optim.AdamW(m.parameters(), lr=LEARNING_RATE) for kind, m in models.items()}
    train = {kind: (lambda k=kind: training_step(models[k], optimizers[k], batch)) for kind in models}
    for run in train.values():
        run()  # warm-up: AdamW allocates its state on the first step
    steps = interleaved(train, repeats)
    return {
        "sizes": sizes,
        "parameters": {kind: parameters(m) for kind, m in models.items()},
        "mmgpt_decoder_parameters": parameters(models["mmgpt"], decoder_only=True),
        "attention": attention,
        "decode": {"prompt_tokens": PROMPT_TOKENS, "new_tokens": new, "repeats": repeats,
                   "tokens_per_s": {k: median(v) for k, v in rates.items()}, "samples": rates},
        "train": {"batch": list(batch_shape), "repeats": repeats,
                  "step_ms": {k: median(v) * 1000 for k, v in steps.items()},
                  "samples_ms": {k: [s * 1000 for s in v] for k, v in steps.items()}},
    }


def run(ctx: Context) -> Result:
    figures, details = [], {"dropout": 0.0, "learning_rate": LEARNING_RATE}
    for size, sizes in SIZES.items():
        found = compare(size, SMOKE_SIZES if ctx.smoke else sizes, ctx.smoke)
        details[size] = found
        rate, step = found["decode"]["tokens_per_s"], found["train"]["step_ms"]
        figures += [
            Figure(f"{size}_decode_ratio", rate["mmgpt"] / rate["gpt2"], "x", ">= 1.0",
                   "mmgpt generate tokens/s / GPT-2's"),
            Figure(f"{size}_train_step_ratio", step["gpt2"] / step["mmgpt"], "x", ">= 1.0",
                   "GPT-2 step time / mmgpt's (above 1: mmgpt faster)"),
            Figure(f"{size}_decode_tokens_per_s_mmgpt", rate["mmgpt"], "tokens/s"),
            Figure(f"{size}_decode_tokens_per_s_gpt2", rate["gpt2"], "tokens/s"),
            Figure(f"{size}_train_step_ms_mmgpt", step["mmgpt"], "ms"),
            Figure(f"{size}_train_step_ms_gpt2", step["gpt2"], "ms"),
        ]
    return Result(figures, details)

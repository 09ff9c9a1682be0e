"""4. GPT-2-small decoding against the memory-bandwidth ceiling.

Decoding one token at batch 1 reads every weight once: all 12 blocks and, for the logits, the whole tied
embedding matrix (50257 x 768); the position table contributes one row. The KV cache adds
2 x 12 layers x tokens x 768 x 4 bytes (about 6 MB at 80 tokens), under 1.5 % of the weights, and is left out.
So at fp32:

    bytes per token  = parameters x 4            (124.4 M x 4 B = 498 MB)
    ceiling tokens/s = bandwidth / bytes per token
    fraction         = measured decode tokens/s / ceiling tokens/s

Bandwidth is measured in this run by copying a large float32 array (best of several copies, counting the bytes
read plus the bytes written, as STREAM's "copy" does), once with torch on all its intra-op threads and once with
numpy on one thread; the higher is the ceiling. The decode rates come from the decoder benchmark of this run when
it ran (its GPT-2-small size), otherwise they are measured here the same way.
"""

import time

from .common import Context, Figure, Result

NAME = "memory_ceiling"
TITLE = "GPT-2-small decode vs the memory-bandwidth ceiling"
BYTES_PER_PARAMETER = 4  # fp32
COPY_BYTES = 2**30  # 1 GiB copied from one array to another
COPY_REPEATS = 5


def copy_bandwidth(n_bytes: int, repeats: int) -> dict:
    """Bytes per second of the best of `repeats` copies of an `n_bytes` float32 array (read + write counted)."""
    import numpy as np
    import torch

    def best(copy) -> float:
        copy()  # first touch: page faults, not bandwidth
        seconds = min(_timed(copy) for _ in range(repeats))
        return 2 * n_bytes / seconds

    source = torch.ones(n_bytes // 4, dtype=torch.float32)
    target = torch.empty_like(source)
    torch_rate = best(lambda: target.copy_(source))
    del source, target
    source = np.ones(n_bytes // 4, dtype=np.float32)
    target = np.empty_like(source)
    numpy_rate = best(lambda: np.copyto(target, source))
    return {"copy_bytes": n_bytes, "repeats": repeats, "torch_bytes_per_s": torch_rate,
            "numpy_bytes_per_s": numpy_rate, "torch_threads": torch.get_num_threads()}


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def decode_figures(ctx: Context) -> dict:
    """GPT-2-small-sized decode tokens/s and parameters of both implementations, from this run."""
    from . import decoder

    found = ctx.results.get(decoder.NAME)
    if found is None:
        sizes = decoder.SMOKE_SIZES if ctx.smoke else decoder.SIZES["gpt2_small"]
        found = decoder.compare("gpt2_small", sizes, ctx.smoke)
    else:
        found = found.details["gpt2_small"]
    return {
        "sizes": found["sizes"],
        "tokens_per_s": found["decode"]["tokens_per_s"],
        "parameters": {"gpt2": found["parameters"]["gpt2"], "mmgpt": found["mmgpt_decoder_parameters"]},
        "new_tokens": found["decode"]["new_tokens"],
    }


def run(ctx: Context) -> Result:
    copy = copy_bandwidth(ctx.size(2**26, COPY_BYTES), ctx.size(2, COPY_REPEATS))
    bandwidth = max(copy["torch_bytes_per_s"], copy["numpy_bytes_per_s"])
    decode = decode_figures(ctx)
    figures, arithmetic = [], {}
    for kind, label in (("gpt2", "gpt2"), ("mmgpt", "mmgpt_at_gpt2_small")):
        bytes_per_token = decode["parameters"][kind] * BYTES_PER_PARAMETER
        ceiling = bandwidth / bytes_per_token
        measured = decode["tokens_per_s"][kind]
        arithmetic[kind] = {"parameters": decode["parameters"][kind], "bytes_per_token": bytes_per_token,
                            "ceiling_tokens_per_s": ceiling, "measured_tokens_per_s": measured,
                            "fraction": measured / ceiling,
                            "formula": f"{measured:.3g} tokens/s / ({bandwidth / 1e9:.3g} GB/s / "
                                       f"{bytes_per_token / 1e6:.4g} MB per token = {ceiling:.3g} tokens/s)"}
        figures.append(Figure(f"{label}_decode_fraction_of_ceiling", measured / ceiling, "x", None,
                              "decode tokens/s / (bandwidth / fp32 weight bytes per token)"))
    figures += [
        Figure("memory_bandwidth_gb_per_s", bandwidth / 1e9, "GB/s", None, "best large-array copy, read + write"),
        Figure("ceiling_tokens_per_s", arithmetic["gpt2"]["ceiling_tokens_per_s"], "tokens/s"),
    ]
    return Result(figures, {"bandwidth": copy, "decode": decode, "arithmetic": arithmetic})

"""1. Streaming overhead: `Engine.stream()` against a plain `model.generate()` with no streamer.

Same loaded model, same prompt, same decoding settings (greedy, `generation_kwargs`), same fixed token count
(`min_new_tokens = max_new_tokens`). Both timings cover preparing the inputs and generating; the engine's also
cover its worker thread, its decoding loop (the request alone in its model's batch thread: `engine/batching.py`),
the streamer's decoding of every token and the hand-off of updates to the caller.
Both generate in a thread that ends with the call, as the engine's workers do, so that neither leaves an OpenMP
team behind that slows the other (see `common.off_main_thread`).
"""

import time

from .common import PRESET, Context, Figure, Result, fixed_length, interleaved, median, off_main_thread

NAME = "streaming"
TITLE = "Streaming overhead (engine.stream vs model.generate)"
PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?"


def run(ctx: Context) -> Result:
    from mmgpt.engine import GenerationParams, TextRequest, generation_kwargs

    engine = ctx.engine()
    adapter = engine.load(PRESET)
    request = TextRequest(PROMPT)
    prompt_tokens = adapter.prepare(request)["input_ids"].shape[-1]
    tokens = min(ctx.size(8, 256), adapter.room_for_new_tokens(adapter.prepare(request)))
    repeats = ctx.size(1, 10)
    params = GenerationParams(max_new_tokens=tokens)

    def plain():
        started = time.perf_counter()
        inputs = adapter.prepare(request)
        output = adapter.model.generate(**inputs, **generation_kwargs(params, adapter.room_for_new_tokens(inputs)))
        seconds = time.perf_counter() - started
        return output.shape[-1] - inputs["input_ids"].shape[-1], seconds

    def streamed():
        started = time.perf_counter()
        last = None
        for last in engine.stream(PRESET, request, params):
            pass
        return last.tokens, time.perf_counter() - started

    with fixed_length(adapter.model, tokens):
        off_main_thread(plain), streamed()  # warm-up
        runs = interleaved({"generate": lambda: off_main_thread(plain), "stream": streamed}, repeats)

    rates = {name: [n / s for n, s in samples] for name, samples in runs.items()}
    counts = {name: sorted({n for n, _ in samples}) for name, samples in runs.items()}
    ratio = median(rates["stream"]) / median(rates["generate"])
    paired = median([s / g for s, g in zip(rates["stream"], rates["generate"])])
    return Result(
        figures=[
            Figure("tokens_per_s_ratio", ratio, "x", ">= 0.97",
                   "median engine.stream tokens/s / median model.generate tokens/s"),
            Figure("stream_tokens_per_s", median(rates["stream"]), "tokens/s"),
            Figure("generate_tokens_per_s", median(rates["generate"]), "tokens/s"),
        ],
        details={
            "prompt_tokens": prompt_tokens,
            "new_tokens": tokens,
            "tokens_generated": counts,
            "repeats": repeats,
            "paired_ratio_median": paired,
            "tokens_per_s": rates,
        },
    )

"""8. "Show what the model saw": decoding speed with the explanation on and off, and what the extra pass costs.

The app's handlers run in-process (no HTTP), once with `show_maps` on and once off, interleaved. tokens/s is the
engine's own measure from the stats line (first to last token), which the extra forward pass cannot touch if it
really runs after generation, as it must. The pass itself shows up as the time from the last streamed text to
the handler's final update (`*_explain_ms`), a delay after the answer, not a slower answer.
"""

import re
import time

from .app_http import PROMPT, TABS, TEXT_TOKENS, example_image, example_speech
from .common import PRESET, Context, Figure, Result, generate_args, interleaved, median

NAME = "explain_overhead"
TITLE = "Attention maps and token confidences: tokens/s on vs off, and the extra pass"
STATS_RATE = re.compile(r"([0-9.]+) tokens/s")


def run(ctx: Context) -> Result:
    import app

    handlers = app.Handlers(ctx.engine())
    image, speech = {"path": str(example_image(ctx))}, {"path": str(example_speech(ctx))}
    text_args = list(generate_args(PROMPT, TEXT_TOKENS).values())
    calls = {
        "caption": lambda on: handlers.caption(image, "", PRESET, on),
        "transcribe": lambda on: handlers.transcribe(speech, PRESET, on),
        "generate": lambda on: handlers.generate(*text_args, on),
    }
    repeats = ctx.size(1, 10)
    figures, details = [], {"repeats": repeats}
    for tab in TABS:
        def timed(on, tab=tab):
            last_text_at, text, stats = None, None, ""
            for output in calls[tab](on):
                if output[0] != text:
                    text, last_text_at = output[0], time.perf_counter()
                stats = output[1]
            rate = STATS_RATE.search(stats)
            return float(rate.group(1)) if rate else float("nan"), (time.perf_counter() - last_text_at) * 1000

        for _ in calls[tab](True):  # warm-up, which also loads the model
            pass
        runs = interleaved({"on": lambda: timed(True), "off": lambda: timed(False)}, repeats)
        rates = {name: [rate for rate, _ in samples] for name, samples in runs.items()}
        tails = {name: [ms for _, ms in samples] for name, samples in runs.items()}
        figures += [
            Figure(f"{tab}_tokens_per_s_ratio", median(rates["on"]) / median(rates["off"]), "x", ">= 0.95",
                   "median tokens/s with maps on / off"),
            Figure(f"{tab}_explain_ms", median(tails["on"]) - median(tails["off"]), "ms", None,
                   "extra time after the last token with maps on"),
        ]
        details[tab] = {"tokens_per_s": rates, "after_last_text_ms": tails}
    return Result(figures=figures, details=details)

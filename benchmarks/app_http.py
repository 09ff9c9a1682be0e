"""2. The app over HTTP: TTFT and tokens/s over HTTP against the engine in-process, on each tab.

The app runs in its own process (`python app.py`, or `benchmarks.serve` for another checkpoint), as it does for a
user; this process is the client. The in-process baseline is `Engine.stream` on an already-decoded request, so
what HTTP adds covers everything a user's request goes through besides the model: the upload, the queue, input
checks and decoding (`mmgpt.inputs`), the handler's pump thread, drawing the spectrogram (Microphone tab), the
server-sent events and the client.

Two clients, interleaved with the in-process runs: `common.Session`, which speaks the web page's protocol (upload,
queue join, event stream: what a browser does, from another machine), carries the targets; `gradio_client`, which
spends about as much CPU per request as the server (a thread per job, polling every millisecond) on the same two
cores, is measured beside it without targets (`*_gradio_client_*`). A second app server with its engine in the
server's own process (`MMGPT_ENGINE_PROCESS=0`, as before issue 16) is measured beside them through `Session`
(`*_engine_in_server_*`, no targets): what the engine's worker process changes, in the same run.

- TTFT: from the upload or queue join (or `submit`, or the `stream()` call) to the first update with text.
- tokens/s (the target): the decoding speed the app reports in its stats line (the engine's own measure, read
  through the client) against the same measure in-process: how much serving the app slows the model.
- arrival tokens/s: tokens written between the first and the last update with new text, over the time between
  their arrivals at the client (greedy decoding streams the same pieces both ways, so the token counts come from
  the in-process updates, matched by text). Short answers arrive in one burst, which makes this meaningless
  for them; it is reported without a target.
"""

import re
import time

from .common import (
    PRESET,
    AppServer,
    Context,
    Figure,
    Result,
    Session,
    distinct_copy,
    generate_args,
    interleaved,
    median,
    percentile,
    shared_server,
)

NAME = "app_http"
TITLE = "The app over HTTP vs the engine in-process"
TABS = ("caption", "transcribe", "generate")
PROMPT = "ROMEO:"
TEXT_TOKENS = 64  # the Text tab's default max_new_tokens
ENGINE_IN_SERVER_ENV = {"MMGPT_ENGINE_PROCESS": "0"}  # the app as it was before issue 16's worker process
STATS_RATE = re.compile(r"([0-9.]+) tokens/s")  # in the stats line the app shows under each answer (English)


def example_image(ctx: Context):
    from .common import REPO_ROOT

    path = REPO_ROOT / "assets" / "examples" / "scene_0.png"
    if path.is_file():
        return path
    from PIL import Image

    path = ctx.tmp / "scene.png"
    if not path.is_file():
        image = Image.new("RGB", (64, 64), (120, 120, 110))
        image.paste((220, 40, 40), (16, 16, 40, 40))
        image.save(path)
    return path


def example_speech(ctx: Context):
    from .common import REPO_ROOT

    path = REPO_ROOT / "assets" / "examples" / "speech_0.wav"
    if path.is_file():
        return path
    import numpy as np
    import soundfile as sf

    path = ctx.tmp / "speech.wav"
    if not path.is_file():
        t = np.arange(32_000) / 16_000
        sf.write(path, (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32),
                 16_000)
    return path


def run(ctx: Context) -> Result:
    engine = ctx.engine()
    server = shared_server(ctx)
    in_server = AppServer(ctx.model_dir, ctx.tmp / "server-engine-in-server.log", env=ENGINE_IN_SERVER_ENV).start()
    try:
        return measure_all(ctx, engine, server, in_server)
    finally:
        in_server.stop()


def measure_all(ctx: Context, engine, server: AppServer, in_server: AppServer) -> Result:
    from gradio_client import handle_file

    from mmgpt import inputs
    from mmgpt.engine import AudioRequest, GenerationParams, ImageRequest, TextRequest

    client = server.client()
    session = Session(server.url, Session.endpoints_of(server.url))
    in_server_session = Session(in_server.url, Session.endpoints_of(in_server.url))
    image, speech = example_image(ctx), example_speech(ctx)
    preset_params = engine.preset(PRESET).params()
    local = {
        "caption": (ImageRequest(inputs.load_image(str(image)), ""), preset_params),
        "transcribe": (AudioRequest(inputs.load_audio(str(speech)).waveform), preset_params),
        "generate": (TextRequest(PROMPT), GenerationParams(max_new_tokens=TEXT_TOKENS)),
    }
    uploads = ctx.tmp / "uploads"

    def page(session):  # what the page sends: the maps on (its default) and the language last; a file of its own
        return {
            "caption": lambda n: lambda: session.run("caption", [session.upload(distinct_copy(image, n, uploads)),
                                                                 "", PRESET, True, "en"]),
            "transcribe": lambda n: lambda: session.run("transcribe", [
                session.upload(distinct_copy(speech, n, uploads)), PRESET, True, "en"]),
            "generate": lambda n: lambda: session.run("generate", [*generate_args(PROMPT, TEXT_TOKENS).values(),
                                                                   True, "en"]),
        }

    pages = {"http": page(session), "engine_in_server": page(in_server_session)}
    gradio_client = {
        "caption": lambda: client.submit(handle_file(str(image)), "", PRESET, api_name="/caption"),
        "transcribe": lambda: client.submit(handle_file(str(speech)), PRESET, api_name="/transcribe"),
        "generate": lambda: client.submit(**generate_args(PROMPT, TEXT_TOKENS), api_name="/generate"),
    }
    repeats = ctx.size(1, 20)
    figures, details = [], {"repeats": repeats, "text_tab_max_new_tokens": TEXT_TOKENS,
                            "before_generation_ms": handler_costs(image, speech, ctx.size(1, 5))}
    for tab in TABS:
        tokens_at: dict[str, int] = {}  # text so far -> tokens written when the engine released it
        count = iter(range(10**6))

        def in_process(tab=tab):
            request, params = local[tab]
            started = time.perf_counter()
            updates = [(time.perf_counter(), u) for u in engine.stream(PRESET, request, params)]
            for _, update in updates:
                tokens_at.setdefault(update.text, update.tokens)
            final = updates[-1][1]
            return measure(started, [(t, u.text) for t, u in updates], tokens_at, final.tokens_per_s)

        def over_http(start_request):
            started = time.perf_counter()
            outputs = [(time.perf_counter(), out) for out in start_request() if out]
            reported = STATS_RATE.search(outputs[-1][1][1] or "") if outputs else None
            rate = float(reported.group(1)) if reported else None
            return measure(started, [(t, out[0] or "") for t, out in outputs], tokens_at, rate)

        paths = {"in_process": in_process,
                 "http": lambda tab=tab: over_http(pages["http"][tab](next(count))),  # copied before the clock
                 "gradio_client": lambda tab=tab: over_http(gradio_client[tab]),
                 "engine_in_server": lambda tab=tab: over_http(pages["engine_in_server"][tab](next(count)))}
        for measure_once in paths.values():  # warm-up: first-call costs of every path
            measure_once()
        runs = interleaved(paths, repeats)
        stats = {path: summarize(samples) for path, samples in runs.items()}
        same = all(h["text"] == runs["in_process"][0]["text"] for path in ("http", "gradio_client", "engine_in_server")
                   for h in runs[path])
        added = {path: stats[path]["ttft_p50_ms"] - stats["in_process"]["ttft_p50_ms"]
                 for path in ("http", "gradio_client", "engine_in_server")}
        figures += [
            Figure(f"{tab}_http_added_ttft_p50_ms", added["http"], "ms", "<= 50",
                   "p50 TTFT over HTTP - p50 in-process"),
            Figure(f"{tab}_tokens_per_s_ratio", ratio(stats, "http", "decode_tokens_per_s"), "x", ">= 0.9",
                   "decode tokens/s the app reports over HTTP / the engine's in-process"),
            Figure(f"{tab}_arrival_tokens_per_s_ratio", ratio(stats, "http", "arrival_tokens_per_s"), "x", None,
                   "tokens/s at which text reaches the client, HTTP / in-process"),
            Figure(f"{tab}_ttft_p50_ms_http", stats["http"]["ttft_p50_ms"], "ms"),
            Figure(f"{tab}_ttft_p95_ms_http", stats["http"]["ttft_p95_ms"], "ms"),
            Figure(f"{tab}_ttft_p50_ms_in_process", stats["in_process"]["ttft_p50_ms"], "ms"),
            Figure(f"{tab}_ttft_p95_ms_in_process", stats["in_process"]["ttft_p95_ms"], "ms"),
            Figure(f"{tab}_gradio_client_http_added_ttft_p50_ms", added["gradio_client"], "ms", None,
                   "the same through gradio_client"),
            Figure(f"{tab}_gradio_client_tokens_per_s_ratio", ratio(stats, "gradio_client", "decode_tokens_per_s"),
                   "x", None, "the same through gradio_client"),
            Figure(f"{tab}_engine_in_server_http_added_ttft_p50_ms", added["engine_in_server"], "ms", None,
                   "the same with the engine in the server's process (MMGPT_ENGINE_PROCESS=0)"),
            Figure(f"{tab}_engine_in_server_tokens_per_s_ratio",
                   ratio(stats, "engine_in_server", "decode_tokens_per_s"), "x", None,
                   "the same with the engine in the server's process (MMGPT_ENGINE_PROCESS=0)"),
        ]
        details[tab] = {**stats, "same_text_every_path": same, "text": runs["in_process"][0]["text"][:200]}
    return Result(figures, details)


def handler_costs(image, speech, repeats: int) -> dict:
    """Median ms of what the app's handlers do before the engine starts (in this process, for comparison)."""
    from mmgpt import figures, inputs

    def timed(fn) -> float:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - started) * 1000)
        return median(samples)

    waveform = inputs.load_audio(str(speech)).waveform
    return {
        "load_image_ms": timed(lambda: inputs.load_image(str(image))),
        "load_audio_ms": timed(lambda: inputs.load_audio(str(speech))),
        "spectrogram_image_ms": timed(lambda: figures.spectrogram_image(waveform)),
        "audio_seconds": len(waveform) / 16_000,
    }


def measure(started: float, texts: list[tuple[float, str]], tokens_at: dict, decode_rate: float | None) -> dict:
    """TTFT and tokens/s of one request from its (arrival time, text so far) updates.

    `decode_rate` is the engine's own tokens/s (in-process: the last update's; over HTTP: the stats line's).
    The arrival rate is tokens written between the first and the last update with new text over the time between
    their arrivals; None when the answer arrived in one piece.
    """
    changes = []  # (time, text) of each update whose text differs from the one before, non-empty only
    for t, text in texts:
        if text and (not changes or changes[-1][1] != text):
            changes.append((t, text))
    if not changes:
        raise RuntimeError("the request streamed no text")
    (t_first, first), (t_last, last) = changes[0], changes[-1]
    tokens = tokens_at[last] - tokens_at[first] if first in tokens_at and last in tokens_at else None
    arrival = tokens / (t_last - t_first) if tokens and t_last > t_first else None
    return {"ttft_s": t_first - started, "end_s": texts[-1][0] - started, "decode_tokens_per_s": decode_rate,
            "arrival_tokens_per_s": arrival, "arrival_span_ms": (t_last - t_first) * 1000,
            "pieces": len(changes), "text": last}


def summarize(samples: list[dict]) -> dict:
    ttfts = [s["ttft_s"] * 1000 for s in samples]

    def typical(key):
        values = [s[key] for s in samples if s[key] is not None]
        return median(values) if values else None

    return {
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p95_ms": percentile(ttfts, 95),
        "end_to_end_p50_ms": percentile([s["end_s"] * 1000 for s in samples], 50),
        "decode_tokens_per_s": typical("decode_tokens_per_s"),
        "arrival_tokens_per_s": typical("arrival_tokens_per_s"),
        "arrival_span_ms": typical("arrival_span_ms"),
        "pieces_streamed": median([s["pieces"] for s in samples]),
        "ttft_ms": ttfts,
    }


def ratio(stats: dict, path: str, key: str) -> float:
    """`path` / in-process medians of `key`; 0 when either is missing (e.g. an answer too short to time)."""
    http, local = stats[path][key], stats["in_process"][key]
    return http / local if http and local else 0.0

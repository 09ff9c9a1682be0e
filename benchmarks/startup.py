"""6. Start and memory: cold start to HTTP 200 and to the first token; resident memory idle, loaded, per session.

Cold start is timed from just before `subprocess.Popen` of the app to the first HTTP 200 on `/`, and to the first
update with text of a first /generate request sent through `gradio_client` right after (its `Client()` fetches the
app's config, as a browser loading the page does). The OS file cache is warm (this is not a first boot). Memory is
the resident set (RSS) of the app process, read with psutil.
"""

import threading
import time

from .common import PRESET, AppServer, Context, Figure, Result, first_text_time, generate_args, median

NAME = "startup"
TITLE = "Cold start and resident memory of the app"
SESSIONS = 8
PROMPT = "ROMEO:"
MIB = 2**20


def run(ctx: Context) -> Result:
    from mmgpt.presets import PRESETS

    repeats = ctx.size(1, 3)
    tokens = ctx.size(4, 64)
    starts = []
    server = None
    for attempt in range(repeats):
        if server is not None:
            server.stop()
        server = AppServer(ctx.model_dir, ctx.tmp / f"startup-{attempt}.log").start()
        idle = server.rss_bytes()
        client = server.client()
        first, _ = first_text_time(client.submit(**generate_args(PROMPT, tokens), api_name="/generate"))
        starts.append({"http_200_s": server.ready_at - server.started_at,
                       "first_token_s": first - server.started_at,
                       "idle_rss_mib": idle / MIB, "loaded_rss_mib": server.rss_bytes() / MIB})
    client = server.client()
    loaded = server.rss_bytes()

    models = {PRESET: {"loaded": True, "rss_mib": loaded / MIB, "weights": str(ctx.model_dir)}}
    for name, preset in PRESETS.items():
        if name == PRESET:
            continue
        models[name] = try_preset(client, server, name, preset.tasks[0], ctx)

    sessions = concurrent_sessions(server, tokens, ctx)
    ctx.server = server  # the HTTP benchmarks go on with this app
    http_200 = median([s["http_200_s"] for s in starts])
    first_token = median([s["first_token_s"] for s in starts])
    idle_mib = median([s["idle_rss_mib"] for s in starts])
    return Result(
        figures=[
            Figure("cold_start_http_200_s", http_200, "s", None, f"median of {repeats}, process start to HTTP 200"),
            Figure("cold_start_first_token_s", first_token, "s", None,
                   "process start to the first text of the first request (model loads on first use)"),
            Figure("rss_idle_mib", idle_mib, "MiB", None, "after HTTP 200, before any request"),
            Figure("rss_mmgpt_tiny_loaded_mib", loaded / MIB, "MiB", None, "after mmgpt-tiny answered"),
            Figure("rss_growth_per_session_mib", sessions["peak_growth_per_session_mib"], "MiB", None,
                   f"(peak RSS during {SESSIONS} concurrent sessions - loaded RSS) / {SESSIONS}"),
        ],
        details={
            "command": " ".join(server.command[1:]),
            "cold_starts": starts,
            "models": models,
            "sessions": sessions,
            "note": "Only mmgpt-tiny ships with the app; every Hub preset needs a download, which this offline "
                    "machine cannot make, so their resident memory is not measured here.",
        },
    )


def try_preset(client, server: AppServer, name: str, task: str, ctx: Context) -> dict:
    """Ask the app for one answer from preset `name`; offline, a Hub preset answers with a clear error."""
    from gradio_client import handle_file

    from .app_http import example_image, example_speech

    if task == "text":
        call = dict(**generate_args(PROMPT, 4, preset=name), api_name="/generate")
    elif task == "image":
        call = dict(image=handle_file(str(example_image(ctx))), prompt="", preset=name, api_name="/caption")
    else:
        call = dict(audio=handle_file(str(example_speech(ctx))), preset=name, api_name="/transcribe")
    try:
        client.predict(**call)
        return {"loaded": True, "rss_mib": server.rss_bytes() / MIB}
    except Exception as exc:  # gradio_client's AppError carries the app's message
        return {"loaded": False, "rss_mib": None, "error": str(exc).strip().splitlines()[-1][:200]}


def concurrent_sessions(server: AppServer, tokens: int, ctx: Context) -> dict:
    """RSS while SESSIONS clients (each its own gradio session) ask for a continuation at the same moment."""
    clients = [server.client() for _ in range(SESSIONS)]
    baseline = server.rss_bytes()
    samples = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append(server.rss_bytes())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    jobs = [c.submit(**generate_args(PROMPT, tokens), api_name="/generate") for c in clients]
    for job in jobs:
        job.result(timeout=600)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    after = server.rss_bytes()
    return {
        "sessions": SESSIONS,
        "max_new_tokens": tokens,
        "seconds": seconds,
        "baseline_rss_mib": baseline / MIB,
        "peak_rss_mib": max(samples) / MIB,
        "after_rss_mib": after / MIB,
        "peak_growth_per_session_mib": (max(samples) - baseline) / SESSIONS / MIB,
        "retained_growth_per_session_mib": (after - baseline) / SESSIONS / MIB,
        "note": "the app runs at most 2 generations at once (MMGPT_CONCURRENCY); the other sessions wait in "
                "its queue",
    }

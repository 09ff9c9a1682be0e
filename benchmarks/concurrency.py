"""7. Concurrency: total tokens/s and time to first token with 1, 4, 8 and 16 clients at once, mixing the tabs.

Each client sends REQUESTS_PER_CLIENT requests one after another, cycling through caption (an example scene),
transcription (an example utterance) and text (a greedy 64-token continuation, the Text tab's default); client i
starts at kind i mod 3, so every moment mixes the three. Total tokens/s = all tokens written / wall time from the
common start to the last answer. TTFT is per request, from the call (in process) or the upload or queue join (over
HTTP) to the first update with text; its p95 is over every request of the run.

Four paths, each measured at every client count:
- `engine`: client threads on one shared `Engine` in this process, requests already decoded (as app_http does);
- `engine_alone`: the same with `Engine(batching=False)`, the path before batching: every request decodes in a
  thread of its own (sampled ones one at a time);
- `http`: sessions that speak the web page's protocol (`common.Session`: upload, join the queue, read the event
  stream) against the app (`python app.py`), as it ships;
- `http_alone`: the app with `MMGPT_BATCHING=0 MMGPT_CONCURRENCY=2 MMGPT_ENGINE_PROCESS=0`, as it was before batching.

How the engine shares the CPU when it batches: each request prefills alone in its own thread (the encoders read
its picture or recording there), then joins the model's batch thread, where one forward pass per step decodes
every request in flight (`mmgpt/engine/batching.py`). With `engine_alone`, N clients are N batch-1 decodes, each
reading all the weights for every token, competing for the cores and the GIL.
"""

import re
import threading
import time
from contextlib import contextmanager

from .common import (
    PRESET,
    AppServer,
    Context,
    Figure,
    Result,
    Session,
    distinct_copy,
    generate_args,
    make_engine,
    median,
    off_main_thread,
    percentile,
    shared_server,
)

NAME = "concurrency"
TITLE = "Total tokens/s and TTFT with 1, 4, 8, 16 clients mixing caption, transcription and text"
CLIENTS = (1, 4, 8, 16)
KINDS = ("caption", "transcribe", "generate")
TEXT_TOKENS = 64  # the Text tab's default max_new_tokens
PROMPTS = ("ROMEO:", "JULIET:", "First Citizen:", "KING RICHARD III:", "But soft, what light", "O Romeo, Romeo!")
PATHS = ("engine", "engine_alone", "http", "http_alone")
ALONE_SERVER_ENV = {"MMGPT_BATCHING": "0", "MMGPT_CONCURRENCY": "2", "MMGPT_ENGINE_PROCESS": "0"}  # the app before
STATS_TOKENS = re.compile(r"· (\d+) tokens")


def examples(ctx: Context) -> dict:
    """The example pictures and recordings (paths), and the same decoded for in-process requests."""
    from mmgpt import inputs

    from .common import REPO_ROOT

    examples_dir = REPO_ROOT / "assets" / "examples"
    pictures = sorted(examples_dir.glob("scene_*.png")) or [_fallback_picture(ctx)]
    recordings = sorted(examples_dir.glob("speech_*.wav")) or [_fallback_recording(ctx)]
    return {
        "pictures": pictures,
        "recordings": recordings,
        "images": [inputs.load_image(str(path)) for path in pictures],
        "waveforms": [inputs.load_audio(str(path)).waveform for path in recordings],
    }


def _fallback_picture(ctx: Context):
    from .app_http import example_image

    return example_image(ctx)


def _fallback_recording(ctx: Context):
    from .app_http import example_speech

    return example_speech(ctx)


def request_of(kind: str, number: int, data: dict):
    """The in-process request `number` of `kind`, with its settings."""
    from mmgpt.engine import AudioRequest, GenerationParams, ImageRequest, TextRequest

    if kind == "caption":
        return ImageRequest(data["images"][number % len(data["images"])]), None
    if kind == "transcribe":
        return AudioRequest(data["waveforms"][number % len(data["waveforms"])]), None
    return TextRequest(PROMPTS[number % len(PROMPTS)]), GenerationParams(max_new_tokens=TEXT_TOKENS)


def submit_of(session: Session, kind: str, number: int, data: dict):
    """The same request as `request_of`, sent to the app (the maps off: they are not generation). Each upload is a
    file of its own, as each user's is (identical files uploaded at once race in Gradio's upload cache)."""
    if kind == "caption":
        picture = session.upload(data["uploads"]["pictures"][number])
        return session.run("caption", [picture, "", PRESET, False, "en"])
    if kind == "transcribe":
        recording = session.upload(data["uploads"]["recordings"][number])
        return session.run("transcribe", [recording, PRESET, False, "en"])
    return session.run("generate", [*generate_args(PROMPTS[number % len(PROMPTS)], TEXT_TOKENS).values(), False,
                                    "en"])


def closed_loop(clients: int, requests: int, one_request) -> dict:
    """`clients` threads, released together, each making `requests` calls `one_request(client, number, kind)`
    -> (tokens, ttft_s, text) in turn. Returns totals, the wall time, TTFT percentiles and each answer by number."""
    start = threading.Barrier(clients + 1)
    done: list = []
    answers: dict[int, str] = {}
    errors: list = []

    def client(index: int):
        try:
            start.wait()
            for number in range(requests):
                kind = KINDS[(index + number) % len(KINDS)]
                tokens, ttft, text = one_request(index, index * requests + number, kind)
                done.append((kind, tokens, ttft, time.perf_counter()))
                answers[index * requests + number] = text
        except BaseException as exc:  # re-raised below, in the benchmark's thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), name=f"bench-client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    tokens = sum(t for _, t, _, _ in done)
    wall = max(end for *_, end in done) - started
    ttfts = [ttft * 1000 for _, _, ttft, _ in done]
    return {"requests": len(done), "tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall,
            "ttft_p50_ms": percentile(ttfts, 50), "ttft_p95_ms": percentile(ttfts, 95),
            "tokens_by_kind": {k: sum(t for kind, t, _, _ in done if kind == k) for k in KINDS}, "answers": answers}


def in_process(engine, data: dict):
    def one_request(client: int, number: int, kind: str):
        request, params = request_of(kind, number, data)
        started, first, last = time.perf_counter(), None, None
        for last in engine.stream(PRESET, request, params):
            if first is None and last.text:
                first = time.perf_counter()
        return last.tokens, (first or time.perf_counter()) - started, last.text

    return one_request


def over_http(sessions: list, data: dict):
    def one_request(client: int, number: int, kind: str):
        started, first, outputs = time.perf_counter(), None, None
        for outputs in submit_of(sessions[client], kind, number, data):
            if first is None and outputs and outputs[0]:
                first = time.perf_counter()
        match = STATS_TOKENS.search(outputs[1] or "") if outputs else None
        return (int(match.group(1)) if match else 0), (first or time.perf_counter()) - started, outputs[0]

    return one_request


@contextmanager
def torch_threads(threads: int):
    """torch's intra-op threads set to `threads` for the whole process meanwhile (threads started meanwhile, such
    as the batch thread and each request's, take it up), then back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def clients(n: int) -> str:
    return f"{n}_client" if n == 1 else f"{n}_clients"


def run(ctx: Context) -> Result:
    import torch

    import app

    data = examples(ctx)
    requests = ctx.size(1, 6)  # per client (full size: every kind twice)
    numbers = range(max(CLIENTS) * requests)
    data["uploads"] = {kind: [distinct_copy(data[kind][n % len(data[kind])], n, ctx.tmp / "uploads") for n in numbers]
                       for kind in ("pictures", "recordings")}
    repeats = ctx.size(1, 2)
    engine = ctx.engine()
    alone_engine = make_engine(ctx.model_dir, batching=False)
    off_main_thread(lambda: alone_engine.load(PRESET))
    calls = {"engine": in_process(engine, data), "engine_alone": in_process(alone_engine, data)}
    alone_server = AppServer(ctx.model_dir, ctx.tmp / "server-alone.log", env=ALONE_SERVER_ENV).start()
    try:
        for path, server in (("http", shared_server(ctx)), ("http_alone", alone_server)):
            endpoints = Session.endpoints_of(server.url)
            calls[path] = over_http([Session(server.url, endpoints) for _ in range(max(CLIENTS))], data)
        measured = {path: {n: [] for n in CLIENTS} for path in PATHS}
        for path in PATHS:
            closed_loop(1, len(KINDS), calls[path])  # warm-up: every kind once
        two_threads = {n: [] for n in (1, 8)}  # the batched engine with torch's default on 2 cores
        for r in range(repeats):
            for n in (CLIENTS if r % 2 == 0 else CLIENTS[::-1]):
                for path in (PATHS if r % 2 == 0 else PATHS[::-1]):
                    measured[path][n].append(closed_loop(n, requests, calls[path]))
                if n in two_threads:
                    with torch_threads(2):
                        two_threads[n].append(closed_loop(n, requests, calls["engine"]))
    finally:
        alone_server.stop()

    answers = {path: [run.pop("answers") for n in CLIENTS for run in measured[path][n]] for path in PATHS}
    reference = answers["engine_alone"]  # every request decoded on its own, through generate()
    same = {path: [run[number] == alone[number] for run, alone in zip(answers[path], reference) for number in run]
            for path in ("engine", "http", "http_alone")}
    summary = {path: {n: {key: median([m[key] for m in runs]) for key in ("tokens_per_s", "ttft_p95_ms")}
                      for n, runs in by_n.items()} for path, by_n in measured.items()}
    figures = []
    targets = {"engine": ">= 3", "http": ">= 2.5"}  # 8 clients' total tokens/s over one client's
    for path in PATHS:
        rate, ttft = ({n: summary[path][n][key] for n in CLIENTS} for key in ("tokens_per_s", "ttft_p95_ms"))
        figures += [Figure(f"{path}_{n}_clients_ratio", rate[n] / rate[1], "x", targets.get(path) if n == 8 else None,
                           f"total tokens/s with {n} clients / with 1") for n in CLIENTS[1:]]
        figures.append(Figure(f"{path}_8_clients_ttft_p95_ratio", ttft[8] / ttft[1], "x",
                              "<= 3" if path in targets else None, "p95 TTFT with 8 clients / with 1"))
        figures += [Figure(f"{path}_{clients(n)}_tokens_per_s", rate[n], "tokens/s") for n in CLIENTS]
        figures += [Figure(f"{path}_{clients(n)}_ttft_p95_ms", ttft[n], "ms") for n in (1, 8)]
    for path, matches in same.items():
        figures.append(Figure(f"{path}_same_answers_as_alone", sum(matches) / len(matches), "x",
                              ">= 1" if path != "http_alone" else None,
                              f"share of {len(matches)} answers identical to engine_alone's (greedy)"))
    for n, runs in two_threads.items():
        rate = median([run["tokens_per_s"] for run in runs])
        figures += [Figure(f"engine_{clients(n)}_tokens_per_s_at_2_threads", rate, "tokens/s"),
                    Figure(f"engine_{clients(n)}_1_thread_vs_2", summary["engine"][n]["tokens_per_s"] / rate, "x",
                           None, f"total tokens/s with {n} clients, 1 torch thread (the app's) / 2")]
    for batched, alone in (("engine", "engine_alone"), ("http", "http_alone")):
        figures += [Figure(f"{batched}_{clients(n)}_vs_before_batching",
                           summary[batched][n]["tokens_per_s"] / summary[alone][n]["tokens_per_s"], "x", None,
                           f"total tokens/s with {n} clients, batched / {alone}") for n in CLIENTS]
    return Result(figures, {
        "requests_per_client": requests,
        "text_new_tokens": TEXT_TOKENS,
        "repeats": repeats,
        "summary": {path: {str(n): s for n, s in by_n.items()} for path, by_n in summary.items()},
        "runs": {path: {str(n): runs for n, runs in by_n.items()} for path, by_n in measured.items()},
        "runs_engine_at_2_threads": {str(n): [{k: v for k, v in run.items() if k != "answers"} for run in runs]
                                     for n, runs in two_threads.items()},
        "torch_intra_op_threads": torch.get_num_threads(),
        "app_concurrency_limit": app.CONCURRENCY_LIMIT,
        "alone_server_env": ALONE_SERVER_ENV,
        "how_the_cpu_is_shared": " ".join(__doc__.split("How the engine shares the CPU when it batches: ", 1)[1]
                                          .split()),
    })

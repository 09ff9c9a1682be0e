"""7. Concurrency: total tokens/s with 1, 4 and 8 text clients at once, as a ratio to 1 client.

Engine level: N threads each stream a greedy continuation of exactly TOKENS tokens from one shared `Engine`
(min_new_tokens fixes the length); total tokens/s = N x TOKENS / wall time from the common start to the last
finish. Over HTTP: N `gradio_client` sessions submit /generate at once to the app, whose queue runs at most
`app.CONCURRENCY_LIMIT` generations at a time; tokens are read off each answer's stats line.

How the engine shares the CPU: every stream runs `generate()` in its own worker thread. Those threads take turns
on the GIL for the Python part of each decoding step (the generate loop, logits processors, the streamer) and
release it inside torch's kernels, where each calling thread runs its own intra-op parallel region of
`torch.get_num_threads()` threads (OpenMP). Nothing batches the requests: N clients are N separate batch-1
decodes, each reading all the weights per token.
"""

import re
import threading
import time

from .common import PRESET, Context, Figure, Result, fixed_length, generate_args, median, shared_server

NAME = "concurrency"
TITLE = "Total tokens/s with 1, 4, 8 concurrent text clients"
CLIENTS = (1, 4, 8)
PROMPT = "ROMEO:"
STATS_TOKENS = re.compile(r"· (\d+) tokens")


def engine_rate(engine, clients: int, tokens: int) -> dict:
    from mmgpt.engine import GenerationParams, TextRequest

    params = GenerationParams(max_new_tokens=tokens)
    start = threading.Barrier(clients + 1)
    finished: list = [None] * clients
    errors: list = []

    def client(index: int):
        try:
            start.wait()
            last = None
            for last in engine.stream(PRESET, TextRequest(PROMPT), params):
                pass
            finished[index] = (last.tokens, time.perf_counter(), last.ttft_s)
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
    total = sum(tokens for tokens, _, _ in finished)
    wall = max(end for _, end, _ in finished) - started
    return {"tokens": total, "seconds": wall, "tokens_per_s": total / wall,
            "ttft_mean_s": sum(t for _, _, t in finished) / clients}


def http_rate(sessions: list, clients: int, tokens: int) -> dict:
    started = time.perf_counter()
    jobs = [s.submit(**generate_args(PROMPT, tokens), api_name="/generate") for s in sessions[:clients]]
    total = 0
    for job in jobs:
        text, stats = job.result(timeout=600)[:2]
        match = STATS_TOKENS.search(stats)
        total += int(match.group(1)) if match else 0
    wall = time.perf_counter() - started
    return {"tokens": total, "seconds": wall, "tokens_per_s": total / wall}


def run(ctx: Context) -> Result:
    import torch

    import app

    engine = ctx.engine()
    model = engine.load(PRESET).model
    tokens = ctx.size(4, 128)
    repeats = ctx.size(1, 2)
    measured = {"engine": {n: [] for n in CLIENTS}, "http": {n: [] for n in CLIENTS}}
    server = shared_server(ctx)
    sessions = [server.client() for _ in range(max(CLIENTS))]
    with fixed_length(model, tokens):
        engine_rate(engine, 1, tokens)  # warm-up
        for r in range(repeats):
            for n in (CLIENTS if r % 2 == 0 else CLIENTS[::-1]):
                measured["engine"][n].append(engine_rate(engine, n, tokens))
    http_rate(sessions, 1, tokens)  # warm-up
    for r in range(repeats):
        for n in (CLIENTS if r % 2 == 0 else CLIENTS[::-1]):
            measured["http"][n].append(http_rate(sessions, n, tokens))

    rates = {path: {n: median([m["tokens_per_s"] for m in runs]) for n, runs in by_n.items()}
             for path, by_n in measured.items()}
    figures = []
    for path in ("engine", "http"):
        for n in CLIENTS[1:]:
            figures.append(Figure(f"{path}_{n}_clients_ratio", rates[path][n] / rates[path][1], "x", None,
                                  f"total tokens/s with {n} clients / with 1"))
        figures.append(Figure(f"{path}_1_client_tokens_per_s", rates[path][1], "tokens/s"))
    return Result(figures, {
        "new_tokens_per_client": tokens,
        "repeats": repeats,
        "tokens_per_s": {path: {str(n): r for n, r in by_n.items()} for path, by_n in rates.items()},
        "runs": {path: {str(n): runs for n, runs in by_n.items()} for path, by_n in measured.items()},
        "torch_intra_op_threads": torch.get_num_threads(),
        "app_concurrency_limit": app.CONCURRENCY_LIMIT,
        "how_the_cpu_is_shared": " ".join(__doc__.split("How the engine shares the CPU: ", 1)[1].split()),
    })

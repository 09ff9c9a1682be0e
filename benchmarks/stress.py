"""Stress scenarios for the app (issue 7): cancel storms, many clients at once, and a long soak of mixed requests.

Each scenario launches the real app (`app.build_demo`) in this process, on small random checkpoints written to a
temporary directory, and drives it as API users do: `gradio_client`, and raw HTTP for dropped connections. The
figures are measured in this process, which is both server and clients.
`tests/test_reliability.py` runs the same scenarios at small sizes. This script runs the large ones and writes
their figures to JSON:

    python -m benchmarks.stress      # 200 cancels each way, 64 clients, 1,000 soak requests, 2,000 sessions
                                     # -> benchmarks/stress.json
    python -m benchmarks.stress --cancels 20 --clients 16 --soak 100 --out /tmp/stress.json
"""

from __future__ import annotations

import os

for _name, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                      "GRADIO_ANALYTICS_ENABLED": "False"}.items():
    os.environ.setdefault(_name, _value)  # before gradio_client is imported: it calls the Hub otherwise

import argparse  # noqa: E402
import ctypes  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import secrets  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import app  # noqa: E402
from mmgpt.engine import Engine  # noqa: E402
from mmgpt.presets import PRESETS, Preset  # noqa: E402

MMGPT_PRESET = "mmgpt-random"  # all three tabs
GPT2_PRESET = "gpt2-random"  # text only: a second model, so the soak checks that each loads once
WORKER_PREFIXES = ("mmgpt-generate-", "mmgpt-stream-")  # the engine's worker threads and the app's pumps
LONG_TOKENS = 2000  # a generation that is still running when it is cancelled (seconds of work)
SHORT_TOKENS = 8  # new tokens per request in the load and soak scenarios
REQUEST_TIMEOUT_S = 60.0  # the engine's time limit in these scenarios: no request may take longer
SETTLE_S = 20.0  # how long to wait for threads to wind down after a scenario
KINDS = ("caption", "transcribe", "generate", "reply")  # the three tabs (the microphone tab has two events)
SCENARIOS = ("cancel", "load", "busy", "soak", "sessions")


# --- measuring --------------------------------------------------------------------------------------------------


def rss_mb() -> float:
    """Resident memory of this process in MB, after a garbage collection (read from /proc/self/status)."""
    gc.collect()
    try:  # hand freed heap pages back to the OS, so that RSS shows what is really held
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def worker_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(WORKER_PREFIXES)]


def wait_for(condition, timeout: float, interval: float = 0.02) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `timeout`."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(interval)


def settle(baseline_threads: int, slack: int = 2) -> int:
    """Wait until no worker thread is left and the thread count is back near `baseline_threads`; return it."""
    wait_for(lambda: not worker_threads() and threading.active_count() <= baseline_threads + slack, SETTLE_S, 0.1)
    return threading.active_count()


def files_under(directory: str | Path) -> int:
    return sum(1 for path in Path(directory).rglob("*") if path.is_file()) if Path(directory).is_dir() else 0


# --- the app under test -----------------------------------------------------------------------------------------


def random_presets(directory: Path) -> dict[str, Preset]:
    """The real presets plus two small random models that never say end-of-text (every answer runs to its limit)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    defaults = {"max_new_tokens": SHORT_TOKENS}
    mmgpt = never_ending_mmgpt_preset(MMGPT_PRESET, directory / "mmgpt", defaults, n_embd=64, n_layer=2)
    gpt2_dir = directory / "gpt2"
    tokenizer = AutoTokenizer.from_pretrained(mmgpt.source)  # a byte-level BPE: any prompt round-trips
    tokenizer.save_pretrained(gpt2_dir)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=512,
                        bos_token_id=None, eos_token_id=None)
    GPT2LMHeadModel(config).save_pretrained(gpt2_dir)
    return {
        **PRESETS,
        MMGPT_PRESET: mmgpt,
        GPT2_PRESET: Preset(GPT2_PRESET, ("text",), "causal-lm", str(gpt2_dir), "random GPT-2", 1, defaults),
    }


def never_ending_mmgpt_preset(name: str, directory: Path, defaults: dict, **sizes) -> Preset:
    """mmgpt-tiny's preset on a random mmgpt written to `directory` (`sizes` as `save_random_checkpoint` takes
    them) that never says end-of-text: every answer runs to its limit, so Stop and cancel always land mid-stream."""
    from mmgpt.model.testing import save_random_checkpoint

    checkpoint = save_random_checkpoint(directory, n_positions=2048, **sizes)
    _disable_end_of_text(checkpoint)
    return dataclasses.replace(PRESETS["mmgpt-tiny"], name=name, source=str(checkpoint), defaults=defaults)


def _disable_end_of_text(directory: Path):
    path = directory / "generation_config.json"
    config = json.loads(path.read_text())
    config.update(eos_token_id=None, _from_model_config=False)
    path.write_text(json.dumps(config))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Served:
    url: str
    demo: object  # gr.Blocks
    engine: Engine

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=False)

    def fn_index(self, api_name: str) -> int:
        for index, dependency in enumerate(self.demo.config["dependencies"]):
            if dependency.get("api_name") == api_name:
                return dependency.get("id", index)
        raise KeyError(api_name)


@contextmanager
def serve(presets: dict[str, Preset], engine: Engine | None = None, queue_size: int | None = None,
          concurrency: int | None = None, cache_sweep: tuple[int, int] | None = None,
          session_capacity: int | None = None) -> Iterator[Served]:
    """Launch the app on 127.0.0.1 with `presets`; queue size, concurrency, cache sweep (seconds between sweeps,
    age of the files swept) and how many sessions Gradio keeps may be overridden."""
    engine = engine or Engine(max_loaded=3, timeout_s=REQUEST_TIMEOUT_S, presets=presets)
    overrides = {"QUEUE_MAX_SIZE": queue_size, "CONCURRENCY_LIMIT": concurrency}
    if cache_sweep:
        overrides.update(CACHE_SWEEP_S=cache_sweep[0], CACHE_MAX_AGE_S=cache_sweep[1])
    saved = {name: getattr(app, name) for name in overrides}
    try:
        for name, value in overrides.items():
            if value is not None:
                setattr(app, name, value)
        demo = app.build_demo(engine)
    finally:
        for name, value in saved.items():
            setattr(app, name, value)
    port = free_port()
    extra = {} if session_capacity is None else {"state_session_capacity": session_capacity}
    demo.launch(**app.launch_kwargs(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                                    quiet=True, **extra))
    try:
        yield Served(f"http://127.0.0.1:{port}/", demo, engine)
    finally:
        demo.close()


# --- requests ---------------------------------------------------------------------------------------------------


def scene_png(path: Path, seed: int = 0) -> Path:
    """A 64x64 picture of a coloured square; `seed` changes the colour, so every upload is a new file."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (64, 64), (120, 120, 110))
    image.paste(tuple(int(c) for c in rng.integers(0, 255, 3)), (16, 16, 40, 40))
    image.save(path)
    return path


def tone_wav(path: Path, seed: int = 0, seconds: float = 1.0) -> Path:
    """A tone in syllable-like bursts (not silence, which the app refuses); `seed` shifts its pitch."""
    t = np.arange(int(16_000 * seconds)) / 16_000
    pitch = 150 + 10 * (seed % 20)
    samples = 0.3 * np.sin(2 * np.pi * pitch * t) * (np.sin(2 * np.pi * 4 * t) > 0)
    sf.write(path, samples.astype(np.float32), 16_000)
    return path


def text_args(prompt: str = "ROMEO:", preset: str = MMGPT_PRESET, max_new_tokens: int = SHORT_TOKENS,
              temperature: float = 0.0, seed=None, **overrides) -> dict:
    args = dict(prompt=prompt, task="continue", target_language="French", context="", preset=preset,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0, top_k=0, repetition_penalty=1.0,
                seed=seed)
    return {**args, **overrides}


def text_data(prompt: str = "ROMEO:", **overrides) -> list:
    """The /generate inputs as a list, in the order the event takes them, for raw HTTP calls (show_maps, lang last)."""
    return [*text_args(prompt, **overrides).values(), True, "en"]


def submit(client, kind: str, workdir: Path, index: int, prompt: str = "ROMEO:"):
    """Start one request of `kind` (one of KINDS); every upload is a new file."""
    from gradio_client import handle_file

    if kind == "caption":
        picture = scene_png(workdir / f"scene-{index}.png", index)
        return client.submit(handle_file(str(picture)), "", MMGPT_PRESET, api_name="/caption")
    if kind == "transcribe":
        recording = tone_wav(workdir / f"tone-{index}.wav", index)
        return client.submit(handle_file(str(recording)), MMGPT_PRESET, api_name="/transcribe")
    if kind == "generate":
        preset = (MMGPT_PRESET, GPT2_PRESET)[index // len(KINDS) % 2]
        return client.submit(**text_args(prompt, preset=preset), api_name="/generate")
    if kind == "reply":
        return client.submit(prompt, GPT2_PRESET, api_name="/reply")
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def job_error(job) -> str:
    """What a finished gradio_client job ended with, as text."""
    try:
        return repr(job.exception(timeout=1))
    except BaseException as exc:  # noqa: BLE001  (a cancelled future raises instead of returning)
        return repr(exc)


def sse_events(served: Served, api_name: str, data: list, session_hash: str | None = None,
               timeout: float = REQUEST_TIMEOUT_S) -> Iterator[dict]:
    """Join the queue over raw HTTP and yield the server's SSE messages; closing the generator drops the connection,
    as a closed browser tab does."""
    session_hash = session_hash or secrets.token_hex(8)
    with httpx.Client(base_url=served.url, timeout=timeout) as http:
        joined = http.post("gradio_api/queue/join", json={
            "data": data, "fn_index": served.fn_index(api_name), "session_hash": session_hash,
            "event_data": None, "trigger_id": None})
        if joined.status_code != 200:
            yield {"msg": "join_refused", "status": joined.status_code, "detail": joined.text}
            return
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session_hash}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    yield message
                    if message.get("msg") in ("process_completed", "close_stream"):
                        return


# --- scenarios --------------------------------------------------------------------------------------------------


def cancel_storm(served: Served, cycles: int, via: str = "client", warmup: int = 3) -> dict:
    """`cycles` times: start a long generation, wait until it streams, then cancel it.

    via="client": `job.cancel()` through gradio_client (the Stop button). via="connection": drop the SSE connection
    mid-stream (a closed tab). Returns thread and memory figures, and how long each worker took to stop.
    """
    if via not in ("client", "connection"):
        raise ValueError(f'via must be "client" or "connection", got {via!r}')
    client = served.client() if via == "client" else None

    anomalies: list[str] = []  # generations that ended, or never streamed, before they could be cancelled

    def cycle() -> float | None:
        if via == "client":
            job = client.submit(**text_args(max_new_tokens=LONG_TOKENS), api_name="/generate")
            started = time.monotonic()
            streaming = wait_for(lambda: job.done() or any(output[0] for output in job.outputs()), REQUEST_TIMEOUT_S,
                                 0.01)
            if streaming is None or job.done():
                outcome = job_error(job) if job.done() else "no text yet"
                anomalies.append(f"{job.status().code} after {time.monotonic() - started:.1f} s: {outcome}")
            job.cancel()
        else:
            events = sse_events(served, "generate", text_data(max_new_tokens=LONG_TOKENS))
            for message in events:
                if message.get("msg") == "process_generating" and message["output"]["data"][0]:
                    break
                if message.get("msg") in ("process_completed", "join_refused"):
                    anomalies.append(f"ended before it could be cancelled: {message}")
                    break
            events.close()  # drops the connection
        return wait_for(lambda: not worker_threads(), SETTLE_S, 0.005)

    for _ in range(warmup):  # load the model, start the thread pools
        cycle()
    threads_before = settle(threading.active_count(), slack=0)
    rss_before = rss_mb()
    started = time.perf_counter()
    stop_times = [cycle() for _ in range(cycles)]
    elapsed = time.perf_counter() - started
    threads_after = settle(threads_before)
    rss_after = rss_mb()
    stopped = [s for s in stop_times if s is not None]
    return {
        "via": via,
        "cycles": cycles,
        "seconds": round(elapsed, 2),
        "threads_before": threads_before,
        "threads_after": threads_after,
        "worker_threads_after": len(worker_threads()),
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "not_stopped": len(stop_times) - len(stopped),
        "anomalies": anomalies[:10],
        "anomaly_count": len(anomalies),
        "stop_s_median": round(float(np.median(stopped)), 3) if stopped else None,
        "stop_s_max": round(max(stopped), 3) if stopped else None,
    }


def load(served: Served, clients: int, rounds: int, workdir: Path) -> dict:
    """`clients` users, each with its own session, send `rounds` requests at once, mixing the tabs.

    Every request must complete or hear that the app is busy (gradio_client's QueueError); the figures count
    each outcome, the slowest completed request and the slowest "busy" answer.
    """
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    users = [served.client() for _ in range(clients)]
    outcomes: Counter[str] = Counter()
    completed_s, busy_s, errors = [], [], []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def user(number: int):
        barrier.wait()
        for round_ in range(rounds):
            index = number * rounds + round_
            kind = KINDS[index % len(KINDS)]
            started = time.perf_counter()
            try:
                job = submit(users[number], kind, workdir, index)
                output = job.result(timeout=REQUEST_TIMEOUT_S)
                outcome = "completed" if output[0] else "empty"
            except QueueError:
                outcome = "busy"
            except (AppError, Exception) as exc:  # noqa: BLE001  (counted and reported, never raised)
                outcome = "timeout" if isinstance(exc, TimeoutError) else "error"
                with lock:
                    errors.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")
            seconds = time.perf_counter() - started
            with lock:
                outcomes[outcome] += 1
                (busy_s if outcome == "busy" else completed_s).append(seconds)

    threads = [threading.Thread(target=user, args=(number,), name=f"stress-user-{number}") for number in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S * rounds + 30)
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "rounds": rounds,
        "requests": clients * rounds,
        "queue_size": served.demo._queue.max_size,
        "seconds": round(elapsed, 2),
        "outcomes": dict(outcomes),
        "errors": errors[:10],
        "hung_threads": sum(thread.is_alive() for thread in threads),
        "slowest_s": round(max(completed_s), 2) if completed_s else None,
        "busy_answer_s_max": round(max(busy_s), 3) if busy_s else None,
        "timeout_s": REQUEST_TIMEOUT_S,
    }


def soak(served: Served, requests: int, workdir: Path, warmup: int = 8) -> dict:
    """`requests` mixed requests in a row from one client: memory, cached files and model loads, before and after."""
    from gradio.utils import get_upload_folder

    client = served.client()
    upload_dir = get_upload_folder()

    def run(index: int):
        kind = KINDS[index % len(KINDS)]
        output = submit(client, kind, workdir, index).result(timeout=REQUEST_TIMEOUT_S)
        if not output[0]:
            raise AssertionError(f"{kind} request {index} gave no text")
        for leftover in workdir.glob(f"*-{index}.*"):  # the client's copy; the server keeps its own
            leftover.unlink()

    for index in range(warmup):
        run(index)
    rss_before, files_before = rss_mb(), files_under(upload_dir)
    cached_peak, rss_trace = 0, []
    started = time.perf_counter()
    for count, index in enumerate(range(warmup, warmup + requests), 1):
        run(index)
        if index % 10 == 0:
            cached_peak = max(cached_peak, cached_files(served))
        if count % max(1, requests // 10) == 0:
            rss_trace.append(round(rss_mb() - rss_before, 1))
    elapsed = time.perf_counter() - started
    rss_after = rss_mb()
    sweep, age = served.demo.delete_cache or (0, 0)
    wait_for(lambda: cached_files(served) == 0, sweep + age + 5, 0.2)
    return {
        "requests": requests,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(requests / elapsed, 2),
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "rss_growth_trace_mb": rss_trace,  # after each tenth of the requests
        "upload_dir": upload_dir,
        "files_in_upload_dir_before": files_before,
        "files_in_upload_dir_after": files_under(upload_dir),
        "cached_files_peak": cached_peak,
        "cached_files_after_sweep": cached_files(served),
        "delete_cache": [sweep, age],
        "load_count": dict(served.engine.load_count),
        "worker_threads_after": len(worker_threads()),
    }


def sessions(served: Served, count: int, warmup: int = 20) -> dict:
    """`count` visitors, each in a new browser session, send one short request: Gradio keeps some state per
    session, so memory grows until the app's session capacity is reached, then stays flat."""
    def visit():
        for message in sse_events(served, "generate", text_data(max_new_tokens=2)):
            if message.get("msg") == "process_completed" and not message.get("success"):
                raise AssertionError(f"a visit failed: {message}")

    for _ in range(warmup):
        visit()
    capacity = served.demo.state_session_capacity
    rss_before = rss_mb()
    trace = []
    started = time.perf_counter()
    for number in range(1, count + 1):
        visit()
        if number % max(1, count // 10) == 0:
            trace.append(round(rss_mb() - rss_before, 1))
    return {
        "sessions": count,
        "seconds": round(time.perf_counter() - started, 2),
        "session_capacity": capacity,
        "sessions_kept": len(served.demo.app.state_holder.session_data),
        "rss_growth_mb": trace[-1] if trace else 0.0,
        "rss_growth_trace_mb": trace,  # after each tenth of the sessions
    }


def cached_files(served: Served) -> int:
    """Files this app put in Gradio's cache for requests (uploads and outputs) that are still on disk; the cached
    copies of the examples, which Gradio keeps for the server's lifetime, are not counted."""
    kept = set()
    for block in served.demo.blocks.values():
        kept.update(getattr(block, "keep_in_cache", set()))
    return sum(1 for files in served.demo.temp_file_sets for path in list(files)
               if path not in kept and os.path.exists(path))


def busy_answer(served: Served, concurrency: int, queue_size: int, attempts: int = 5) -> dict:
    """Fill the queue with long generations, then ask again: how fast does the caller hear that the app is busy?

    Asked both over raw HTTP (the status of the queue/join call) and through gradio_client (its QueueError).
    """
    from gradio_client.utils import QueueError

    client = served.client()

    def submit_long(count: int) -> list:
        return [client.submit(**text_args(max_new_tokens=LONG_TOKENS), api_name="/generate") for _ in range(count)]

    # The running ones first: all at once, the queue would take the last ones before any had started, and
    # refuse them itself.
    jobs = submit_long(concurrency)
    try:
        if wait_for(lambda: len(served.demo._queue) == 0 and sum(job.status().code.name == "ITERATING"
                                                                 for job in jobs) == concurrency,
                    REQUEST_TIMEOUT_S) is None:
            raise AssertionError(f"the first {concurrency} generations never started")
        jobs += submit_long(queue_size)
        if wait_for(lambda: len(served.demo._queue) >= queue_size, REQUEST_TIMEOUT_S) is None:
            raise AssertionError(f"the queue never filled: {len(served.demo._queue)} waiting")
        statuses, http_s, client_s, client_errors = [], [], [], []
        for _ in range(attempts):
            started = time.perf_counter()
            refused = next(sse_events(served, "generate", text_data()))
            http_s.append(time.perf_counter() - started)
            statuses.append(refused.get("status", refused.get("msg")))
            started = time.perf_counter()
            try:
                client.predict(**text_args(), api_name="/generate")
                client_errors.append("none")
            except QueueError as exc:
                client_errors.append(str(exc))
            client_s.append(time.perf_counter() - started)
    finally:
        for job in jobs:
            job.cancel()
    settle(threading.active_count())
    return {
        "concurrency": concurrency,
        "queue_size": queue_size,
        "http_statuses": statuses,
        "http_answer_s_max": round(max(http_s), 3),
        "client_errors": sorted(set(client_errors)),
        "client_answer_s_max": round(max(client_s), 3),
    }


# --- the script -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cancels", type=int, default=200, help="start-then-cancel cycles, each way")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients in the load scenario")
    parser.add_argument("--rounds", type=int, default=2, help="requests each client sends")
    parser.add_argument("--queue-size", type=int, default=app.QUEUE_MAX_SIZE, help="the app's queue size under load")
    parser.add_argument("--soak", type=int, default=1000, help="mixed requests in the soak")
    parser.add_argument("--sessions", type=int, default=2 * app.SESSION_CAPACITY,
                        help="visitors, each in a new session (twice the session capacity shows the plateau)")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "stress.json")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    figures: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "app": {"concurrency": app.CONCURRENCY_LIMIT, "queue_size": app.QUEUE_MAX_SIZE},
    }
    with tempfile.TemporaryDirectory(prefix="mmgpt-stress-") as scratch:
        scratch = Path(scratch)
        presets = random_presets(scratch)
        engine = Engine(max_loaded=3, timeout_s=REQUEST_TIMEOUT_S, presets=presets)
        workdir = scratch / "uploads"
        workdir.mkdir()
        wanted = set(args.only or SCENARIOS)
        if "cancel" in wanted:
            with serve(presets, engine) as served:
                for via in ("client", "connection"):
                    figures[f"cancel_via_{via}"] = report(cancel_storm(served, args.cancels, via))
        if wanted & {"load", "busy"}:
            with serve(presets, engine, queue_size=args.queue_size) as served:
                if "load" in wanted:
                    figures["load"] = report(load(served, args.clients, args.rounds, workdir))
                if "busy" in wanted:
                    figures["busy"] = report(busy_answer(served, app.CONCURRENCY_LIMIT, args.queue_size))
        if "soak" in wanted:
            with serve(presets, engine, cache_sweep=(5, 10)) as served:
                figures["soak"] = report(soak(served, args.soak, workdir))
        if "sessions" in wanted:
            with serve(presets, engine) as served:
                figures["sessions"] = report(sessions(served, args.sessions))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")
    return figures


def report(figures: dict) -> dict:
    print(json.dumps(figures), flush=True)
    return figures


if __name__ == "__main__":
    main()

"""What every benchmark shares: the run context, the model under test, timing statistics, an app server.

A benchmark is a module with `NAME`, `TITLE` and `run(ctx) -> Result`. A `Result` holds headline `Figure`s (each
one number, most of them ratios measured in this run) and a `details` dict of everything they were computed from.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO_ROOT / "assets" / "mmgpt-tiny"
PRESET = "mmgpt-tiny"  # the preset name the benchmarks serve, whatever checkpoint --model points at
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_ANALYTICS_ENABLED": "False"}
SERVER_START_TIMEOUT_S = 180.0  # an app that is not answering HTTP 200 by then counts as broken
POLL_S = 0.02  # how often the start-up probe and the memory sampler look


@dataclass
class Figure:
    """One headline number. `target` is a bound (">= 0.97", "<= 100") or None where there is none to meet."""

    name: str
    value: float
    unit: str = ""
    target: str | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target.split()
        return self.value >= float(bound) if op == ">=" else self.value <= float(bound)

    def as_json(self) -> dict:
        return {"value": _round(self.value), "unit": self.unit, "target": self.target, "met": self.met,
                "note": self.note}


@dataclass
class Result:
    figures: list[Figure]
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"figures": {f.name: f.as_json() for f in self.figures}, "details": _round(self.details)}


def _round(value):
    """Floats to 4 significant digits, recursively, so the JSON stays readable and diffs stay small."""
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


# --- statistics ----------------------------------------------------------------------------------------------------


def median(values) -> float:
    return float(statistics.median(values))


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def off_main_thread(work: Callable[[], Any]) -> Any:
    """`work()` in a new thread that ends with it; its result, or its exception re-raised.

    Why: each thread that runs torch keeps its own OpenMP team, and while one is left over, decoding in every
    other thread slows down (mmgpt-tiny on this 2-core machine, in worker threads: 651, 570 and 473 tokens/s in
    three processes, then 446, 372 and 370 once the main thread had generated too). The app never runs torch in
    its main thread, so neither do the benchmarks, which each run in a thread of their own.
    """
    outcome = {}

    def run():
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed back to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="benchmark-off-main")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def interleaved(runs: dict[str, Any], repeats: int) -> dict[str, list]:
    """Call each of `runs` `repeats` times, alternating the order (ABBA...) so drift hits both alike."""
    names = list(runs)
    out = {name: [] for name in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            out[name].append(runs[name]())
    return out


# --- the model under test -----------------------------------------------------------------------------------------


@dataclass
class Context:
    smoke: bool
    model_dir: Path
    model_kind: str  # "trained (shipped)", "given" (--model) or "random" (built here)
    tmp: Path
    results: dict[str, Result] = field(default_factory=dict)
    server: AppServer | None = None  # a running app, shared by the HTTP benchmarks once started
    _engine: Any = None

    def size(self, smoke, full):
        return smoke if self.smoke else full

    def engine(self):
        """One engine serving PRESET from `model_dir`, shared by the in-process benchmarks (loaded once, off the
        main thread, as the app loads it in a request's thread: see `off_main_thread`)."""
        if self._engine is None:
            self._engine = make_engine(self.model_dir)
            off_main_thread(lambda: self._engine.load(PRESET))
        return self._engine

    def close(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


def make_engine(model_dir: Path, max_loaded: int = 1, batching: bool = True):
    """An engine with the app's settings (torch threads included), serving PRESET from `model_dir`."""
    import app
    from mmgpt.engine import Engine
    from mmgpt.presets import PRESETS

    preset = dataclasses.replace(PRESETS[PRESET], source=str(model_dir))
    return Engine(max_loaded=max_loaded, device="cpu", timeout_s=600, presets={**PRESETS, PRESET: preset},
                  batching=batching, threads=app.TORCH_THREADS)


def random_checkpoint(directory: Path, smoke: bool) -> Path:
    """A random mmgpt at mmgpt-tiny's sizes (MMGPTConfig defaults; test sizes for --smoke) that never stops early.

    Its tokenizer is a 2,048-token BPE trained on Tiny Shakespeare when the corpus is there; its end-of-text is
    switched off, so every answer runs to max_new_tokens as a trained model's long answers do.
    """
    import torch

    from mmgpt.model import MMGPTConfig, MMGPTForCausalLM, MMGPTProcessor, train_tokenizer
    from mmgpt.model.testing import TINY_CORPUS, tiny_config

    if smoke:
        texts = [TINY_CORPUS] * 4
    else:
        try:
            from mmgpt.data.text import load_shakespeare

            corpus = load_shakespeare()
            texts = [corpus[i:i + 10_000] for i in range(0, len(corpus), 10_000)]
        except FileNotFoundError:
            texts = [TINY_CORPUS] * 4
    tokenizer = train_tokenizer(texts, vocab_size=MMGPTConfig().vocab_size)
    config = tiny_config(max(len(tokenizer), 320)) if smoke else MMGPTConfig()
    torch.manual_seed(0)
    model = MMGPTForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    model.save_pretrained(directory)
    MMGPTProcessor.from_config(config, tokenizer).save_pretrained(directory)
    path = directory / "generation_config.json"
    generation = json.loads(path.read_text())
    generation.update(eos_token_id=None, _from_model_config=False)
    path.write_text(json.dumps(generation))
    return directory


def resolve_model(model: str | None, smoke: bool, tmp: Path) -> tuple[Path, str]:
    """(checkpoint dir, kind of weights): `model` if given; else, for a full run, assets/mmgpt-tiny once it is
    trained; else a random model written to `tmp` (mmgpt-tiny's sizes, or the test sizes for --smoke)."""
    if model is not None:
        path = Path(model).resolve()
        if not (path / "config.json").is_file():
            raise SystemExit(f"--model {model}: no config.json there; give a saved mmgpt checkpoint directory")
        return path, "trained (shipped)" if path == SHIPPED_MODEL.resolve() else "given"
    if not smoke and (SHIPPED_MODEL / "config.json").is_file():
        return SHIPPED_MODEL, "trained (shipped)"
    return random_checkpoint(tmp / "random-mmgpt", smoke), "random"


def fixed_length(model, tokens: int):
    """Context manager: every generate() of `model` writes exactly `tokens` tokens (min_new_tokens)."""
    from contextlib import contextmanager

    @contextmanager
    def manager():
        config = model.generation_config
        before = config.min_new_tokens
        config.min_new_tokens = tokens
        try:
            yield
        finally:
            config.min_new_tokens = before

    return manager()


# --- an app server in a child process --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**extra) -> dict:
    env = {**os.environ, **OFFLINE_ENV, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


class AppServer:
    """`python app.py` (or `python -m benchmarks.serve --model DIR` for any other checkpoint) on a free port."""

    def __init__(self, model_dir: Path, log_path: Path, env: dict[str, str] | None = None):
        self.model_dir = model_dir
        self.env = env or {}  # settings for the app (MMGPT_*), on top of this process's environment
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        if model_dir.resolve() == SHIPPED_MODEL.resolve():
            self.command = [sys.executable, "app.py"]
        else:
            self.command = [sys.executable, "-m", "benchmarks.serve", "--model", str(model_dir)]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.started_at = self.ready_at = None

    def start(self) -> AppServer:
        """Start the process and return once it answers HTTP 200; `ready_at - started_at` is the cold start."""
        env = child_env(GRADIO_SERVER_PORT=str(self.port), GRADIO_SERVER_NAME="127.0.0.1",
                        MMGPT_LOG_LEVEL="WARNING", **self.env)
        log = open(self.log_path, "ab")
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = self.started_at + SERVER_START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{' '.join(self.command)} exited with {self.process.returncode}; "
                                   f"see {self.log_path}:\n{self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        self.ready_at = time.perf_counter()
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(POLL_S)
        self.stop()
        raise RuntimeError(f"the app did not answer HTTP 200 within {SERVER_START_TIMEOUT_S:.0f} s")

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=False)

    def rss_bytes(self) -> int:
        """Resident memory of the server process and any children it started."""
        import psutil

        process = psutil.Process(self.process.pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def shared_server(ctx: Context) -> AppServer:
    """The app server the HTTP benchmarks share: started once (or handed over by the start-up benchmark)."""
    if ctx.server is None or ctx.server.process is None or ctx.server.process.poll() is not None:
        ctx.server = AppServer(ctx.model_dir, ctx.tmp / "server.log").start()
    return ctx.server


def timed_job(job) -> list[tuple[float, tuple]]:
    """(perf_counter time, output) for each output of a gradio_client job, as it arrives."""
    return [(time.perf_counter(), output) for output in job]


def new_tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="mmgpt-bench-"))


def generate_args(prompt: str, max_new_tokens: int, preset: str = PRESET) -> dict:
    """Keyword arguments of the app's /generate endpoint for a greedy continuation."""
    return dict(prompt=prompt, task="continue", target_language="French", context="", preset=preset,
                max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
                seed=None)


def first_text_time(job) -> tuple[float | None, list[tuple[float, tuple]]]:
    """(time of the job's first output with non-empty text, all timed outputs), consuming the job."""
    outputs = timed_job(job)
    first = next((t for t, output in outputs if output and output[0]), None)
    return first, outputs


class ForeignLoad:
    """Measures how much CPU other processes used while a benchmark ran, in cores (0 = the machine was ours).

    Busy CPU time of the whole machine (/proc/stat via psutil) minus that of this process and its children,
    divided by the wall time. Timings taken while it is well above 0 shared the CPU with someone else.
    """

    def __init__(self):
        import psutil

        self._psutil = psutil
        self._own = {}  # pid -> last seen cpu seconds, of this process tree

    def _machine_busy(self) -> float:
        times = self._psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def _own_busy(self) -> float:
        me = self._psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                cpu = process.cpu_times()
                self._own[process.pid] = cpu.user + cpu.system
            except self._psutil.NoSuchProcess:
                pass
        return sum(self._own.values())

    def _sample(self):
        while not self._done.wait(0.5):  # children that start and exit in between are caught here
            self._own_busy()

    def __enter__(self):
        import threading

        self.started = time.perf_counter()
        self.machine = self._machine_busy()
        self.own = self._own_busy()
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="bench-foreign-load", daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._sampler.join()
        wall = time.perf_counter() - self.started
        other = (self._machine_busy() - self.machine) - (self._own_busy() - self.own)
        self.cores = max(other, 0.0) / wall if wall > 0 else 0.0
        return False

"""8. Remote presets: the same model through `transformers serve` and in process, and 8 clients at once.

Three measurements in one run, all greedy answers of exactly TOKENS tokens to the same chat request:
- **remote**: a remote preset (mmgpt.engine.remote, the openai client, streamed SSE over HTTP on 127.0.0.1)
  against `transformers serve` without continuous batching; tokens/s after the first token, and TTFT from the
  request to the first content event (HTTP, the chat template, prefill and the first decoding step);
- **in process**: the same checkpoint as an ordinary chat-lm preset of the engine, in this process;
- **8 clients**: 8 threads at once through the remote preset against a second `transformers serve` with
  `--continuous-batching` (paged attention, requests sharing decoding steps); total tokens/s = all tokens / wall
  time from the common start to the last finish, and the ratio to one client on the same server.

The model is a random Llama at mmgpt-tiny's decoder sizes (256 wide, 6 layers, 8 heads; test sizes for --smoke)
with a word-level tokenizer and no end-of-text, so every answer runs to its limit (mmgpt itself cannot be served:
`transformers serve` loads only architectures that transformers ships). The server gets as many torch threads
as this process has. On this 2-core machine both sides share the CPU with the benchmark's client and with the
training run that keeps it busy (`other_processes_cpu_cores` in the report): figures are noisy, and the
continuous batching figure says what batching gains on a loaded CPU, not on a GPU.

The module also holds what the tests share with it: the checkpoints `transformers serve` serves, built here
offline, and the server itself as a child process (`ModelServer`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
import urllib.error
import urllib.request
from pathlib import Path

from .common import OFFLINE_ENV, Context, Figure, Result, free_port, interleaved, median

NAME = "remote"
TITLE = "Remote preset via transformers serve vs in process; 8 clients with continuous batching"
SERVE_START_TIMEOUT_S = 120.0  # a server not answering /health by then counts as broken
HEALTH_POLL_S = 0.1
CB_BLOCK_SIZE, CB_BLOCKS = 32, 256  # paged KV cache: 8,192 token slots (its default sizes it from memory: 6 GB)
CLIENTS = 8
REQUEST = "romeo what light through yonder window breaks"

WORDS = (
    "a small red blue green circle square star at the top left right of romeo juliet but soft what light "
    "through yonder window breaks it is east and sun"
).split()
SPECIALS = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<image>")
# Text-only messages and OpenAI-style content lists (an image part renders as <image>), as real templates take them
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|> {{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% elif part['type'] == 'text' %}{{ part['text'] }} {% endif %}"
    "{% endfor %}{% endif %} <|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


# --- checkpoints -------------------------------------------------------------------------------------------------


def word_tokenizer():
    """Word-level: every generated token decodes to a whole word, so every one becomes a content event."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate([*SPECIALS, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        additional_special_tokens=list(SPECIALS[2:]))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _never_ending(model, tokenizer):
    """No end-of-text, and never a special token: every answer is words, up to its max_new_tokens."""
    model.config.eos_token_id = model.generation_config.eos_token_id = None
    model.generation_config.suppress_tokens = [tokenizer.convert_tokens_to_ids(token) for token in SPECIALS]


def save_chat_model(directory: Path, hidden_size: int = 32, layers: int = 2, heads: int = 4,
                    positions: int = 4096) -> Path:
    """A random Llama chat model (tokenizer with chat template, weights) in `directory`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = word_tokenizer()
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=positions, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    model = LlamaForCausalLM(config)
    _never_ending(model, tokenizer)
    model.save_pretrained(directory)
    return directory


def save_vision_chat_model(directory: Path) -> Path:
    """A random tiny LLaVA (CLIP vision tower, Llama text model) with its processor, in `directory`."""
    import torch
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tokenizer = word_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, patch_size=8,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained(directory)
    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=None, eos_token_id=None, pad_token_id=0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=64, patch_size=8, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(config)
    _never_ending(model, tokenizer)
    model.save_pretrained(directory)
    return directory


# --- the server --------------------------------------------------------------------------------------------------


class ModelServer:
    """`transformers serve` on 127.0.0.1 and a free port, as a child process; it loads the local checkpoint a
    request names (`model` = its path) on first use. `options` are more CLI flags, e.g. --continuous-batching."""

    def __init__(self, log_path: Path, *options: str, threads: int = 1):
        self.log_path = log_path
        self.options = options
        self.threads = threads
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.startup_s: float | None = None  # from the process start to /health answering 200

    @property
    def url(self) -> str:
        """The API root a preset's base_url takes."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ModelServer:
        self.port = self.port or free_port()  # a restarted server keeps its address, so presets stay valid
        command = [_transformers_cli(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--log-level", "info", *self.options]
        env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": str(self.threads)}
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + SERVE_START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        self.startup_s = time.perf_counter() - started
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(HEALTH_POLL_S)
        self.stop()
        raise RuntimeError(f"transformers serve did not answer /health within {SERVE_START_TIMEOUT_S:.0f} s")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def kill(self):
        """SIGKILL: the server dies at once, mid-answer if it is answering."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self):
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def _transformers_cli() -> str:
    """The `transformers` command of this Python's environment."""
    beside = Path(sys.executable).with_name("transformers")
    found = str(beside) if beside.is_file() else shutil.which("transformers")
    if not found:
        raise RuntimeError("the `transformers` command is missing: pip install transformers")
    return found


def remote_preset(name: str, base_url: str, model: str, tasks=("text",), **server):
    """A remote preset for `model` at `base_url`, as MMGPT_REMOTE_PRESETS would declare it."""
    from mmgpt.presets import REMOTE_LOADER, Preset, RemoteServer

    return Preset(name, tuple(tasks), REMOTE_LOADER, base_url, f"{model} on {base_url}", 0,
                  server=RemoteServer(base_url, str(model), **server))


# --- the benchmark ------------------------------------------------------------------------------------------------


def one_answer(engine, preset: str, tokens: int) -> dict:
    """Stream one greedy chat answer of exactly `tokens` tokens: its TTFT, tokens/s and when it ended."""
    from mmgpt.requests import GenerationParams, TextRequest

    last = None
    for last in engine.stream(preset, TextRequest(REQUEST, task="chat"), GenerationParams(max_new_tokens=tokens)):
        pass
    if last.tokens != tokens:
        raise RuntimeError(f"{preset} wrote {last.tokens} tokens, not {tokens}")
    return {"ttft_s": last.ttft_s, "tokens_per_s": last.tokens_per_s, "ended": time.perf_counter()}


def concurrent_answers(engine, preset: str, clients: int, tokens: int) -> dict:
    """`clients` answers at once, each in its own thread: total tokens / time from the start to the last end."""
    with ThreadPoolExecutor(clients, thread_name_prefix="bench-remote") as pool:
        started = time.perf_counter()
        answers = list(pool.map(lambda _: one_answer(engine, preset, tokens), range(clients)))
    wall = max(answer["ended"] for answer in answers) - started
    return {"tokens": clients * tokens, "seconds": wall, "tokens_per_s": clients * tokens / wall}


def run(ctx: Context) -> Result:
    import torch

    from mmgpt.engine import Engine
    from mmgpt.presets import Preset

    tokens, repeats = ctx.size(8, 128), ctx.size(1, 5)
    sizes = ctx.size(dict(hidden_size=32, layers=2, heads=4), dict(hidden_size=256, layers=6, heads=8))
    model_dir = save_chat_model(ctx.tmp / "remote-llama", **sizes)
    threads = torch.get_num_threads()
    local = Preset("llama-in-process", ("text",), "chat-lm", str(model_dir), "the same Llama, in process", 1)

    def engine_for(server: ModelServer) -> Engine:
        remote = remote_preset("llama-remote", server.url, model_dir)
        return Engine(max_loaded=1, device="cpu", timeout_s=600, presets={remote.name: remote, local.name: local})

    plain = ModelServer(ctx.tmp / "serve.log", threads=threads).start()
    try:
        engine = engine_for(plain)
        for preset in ("llama-remote", "llama-in-process"):  # loads the model on both sides
            one_answer(engine, preset, tokens)
        runs = interleaved({"remote": lambda: one_answer(engine, "llama-remote", tokens),
                            "in_process": lambda: one_answer(engine, "llama-in-process", tokens)}, repeats)
    finally:
        plain.stop()
    batching = ModelServer(ctx.tmp / "serve-cb.log", "--continuous-batching", "--cb-block-size", str(CB_BLOCK_SIZE),
                           "--cb-num-blocks", str(CB_BLOCKS), threads=threads).start()
    try:
        engine = engine_for(batching)
        one_answer(engine, "llama-remote", tokens)  # loads the model and sets up the paged cache
        one_client = [concurrent_answers(engine, "llama-remote", 1, tokens) for _ in range(repeats)]
        many = [concurrent_answers(engine, "llama-remote", CLIENTS, tokens) for _ in range(repeats)]
    finally:
        batching.stop()

    def typical(results: list[dict], key: str) -> float:
        return median([r[key] for r in results])

    remote_rate, local_rate = typical(runs["remote"], "tokens_per_s"), typical(runs["in_process"], "tokens_per_s")
    one_rate, many_rate = typical(one_client, "tokens_per_s"), typical(many, "tokens_per_s")
    loaded = "machine shared with a training run and other sessions (see other_processes_cpu_cores)"
    figures = [
        Figure("remote_tokens_per_s", remote_rate, "tokens/s", note="remote preset via transformers serve"),
        Figure("remote_ttft_ms", typical(runs["remote"], "ttft_s") * 1000, "ms",
               note="request to first content event, over HTTP on 127.0.0.1"),
        Figure("in_process_tokens_per_s", local_rate, "tokens/s", note="the same checkpoint as a chat-lm preset"),
        Figure("in_process_ttft_ms", typical(runs["in_process"], "ttft_s") * 1000, "ms"),
        Figure("remote_to_in_process_tokens_per_s_ratio", remote_rate / local_rate, "x"),
        Figure(f"continuous_batching_{CLIENTS}_clients_tokens_per_s", many_rate, "tokens/s",
               note=f"total over {CLIENTS} clients at once, transformers serve --continuous-batching; {loaded}"),
        Figure("continuous_batching_1_client_tokens_per_s", one_rate, "tokens/s"),
        Figure(f"continuous_batching_{CLIENTS}_clients_ratio", many_rate / one_rate, "x",
               note=f"total tokens/s with {CLIENTS} clients over 1 client, same server"),
        Figure("serve_startup_s", plain.startup_s, "s", note="transformers serve: process start to /health 200"),
    ]
    details = {
        "tokens_per_answer": tokens, "repeats": repeats, "model": {"family": "llama (random)", **sizes},
        "torch_threads_client_and_server": threads, "machine": loaded,
        **{side: [{key: run[key] for key in ("ttft_s", "tokens_per_s")} for run in runs[side]] for side in runs},
        "continuous_batching": {"block_size": CB_BLOCK_SIZE, "blocks": CB_BLOCKS, "one_client": one_client,
                                f"{CLIENTS}_clients": many, "startup_s": batching.startup_s},
    }
    return Result(figures, details)

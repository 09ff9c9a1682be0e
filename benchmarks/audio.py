"""5. Audio: loading, resampling and featurizing 10 minutes of 44.1 kHz stereo, and mmgpt-tiny's real-time factor.

The long recording is made here with numpy (a voiced-like harmonic tone whose pitch and loudness wander, plus
noise), written as 16-bit FLAC and as WAV. `mmgpt.inputs.load_audio` reads it (soundfile), checks it, mixes it to
mono and resamples it to 16 kHz (librosa, soxr); `mmgpt.audio.log_mel_spectrogram` then featurizes it whole, and
the processor featurizes it again window by window as a transcription does.

Real-time factor = (load + transcribe time) / audio duration over espeak-ng utterances (held-out voices) and the
app's example recordings, transcribed through `Engine.stream`. Below 1 is faster than real time.
"""

import shutil
import time

from .common import PRESET, Context, Figure, Result

NAME = "audio"
TITLE = "Audio loading/featurizing and real-time factor"
LONG_SECONDS = 600  # 10 minutes, inputs.MAX_AUDIO_SECONDS: the longest recording the app takes whole
LONG_RATE = 44_100
SENTENCES = (
    "a small red circle at the top left",
    "a large blue square left of a small green star",
    "three hundred and twelve",
    "turn off the lights",
    "a small yellow triangle above a large white diamond",
)


def long_recording(seconds: int, rate: int):
    """Float32 `(n, 2)`: a harmonic tone with a wandering pitch and loudness, and a little noise, per channel."""
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(seconds * rate, dtype=np.float64) / rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    channels = [0.25 * voice + 0.02 * rng.standard_normal(t.size) for _ in range(2)]
    return np.stack(channels, axis=1).astype(np.float32)


def featurize(ctx: Context, seconds: int) -> dict:
    import soundfile as sf

    from mmgpt import inputs
    from mmgpt.audio import log_mel_spectrogram
    from mmgpt.engine import AudioRequest, audio_windows

    processor = ctx.engine().load(PRESET).processor
    samples = long_recording(seconds, LONG_RATE)
    out = {"seconds": seconds, "sample_rate": LONG_RATE, "channels": 2}
    for fmt in ("flac", "wav"):
        path = ctx.tmp / f"long.{fmt}"
        sf.write(path, samples, LONG_RATE, format=fmt.upper(), subtype="PCM_16")
        started = time.perf_counter()
        clip = inputs.load_audio(str(path))
        loaded = time.perf_counter()
        features = log_mel_spectrogram(clip.waveform)
        featurized = time.perf_counter()
        windows = audio_windows(AudioRequest(clip.waveform), processor.max_audio_seconds)
        windowed = [processor.audio_to_features(w.waveform, 16_000) for w in windows]
        by_window = time.perf_counter() - featurized
        out[fmt] = {"file_mb": path.stat().st_size / 1e6, "load_and_resample_s": loaded - started,
                    "log_mel_s": featurized - loaded, "total_s": featurized - started,
                    "windows": len(windowed), "processor_windows_s": by_window,
                    "frames": int(features.shape[1]), "truncated": clip.truncated}
        path.unlink()
    return out


def utterances(ctx: Context, count: int) -> list[tuple[str, str]]:
    """(wav path, what it says): the app's example recordings, then espeak-ng ones in held-out voices."""
    import json

    import soundfile as sf

    from .app_http import example_speech
    from .common import REPO_ROOT

    found = []
    listing = REPO_ROOT / "assets" / "examples" / "examples.json"
    if listing.is_file():
        for name, text in sorted(json.loads(listing.read_text()).items()):
            if name.endswith(".wav"):
                found.append((str(listing.parent / name), text))
    if shutil.which("espeak-ng"):
        from mmgpt.data.speech import TEST_VOICES, synthesize

        for index, sentence in enumerate(SENTENCES):
            waveform = synthesize(sentence, TEST_VOICES[index % len(TEST_VOICES)], 160, 50, cache_dir=ctx.tmp / "tts")
            path = ctx.tmp / f"utterance{index}.wav"
            sf.write(path, waveform, 16_000)
            found.append((str(path), sentence))
    if not found:
        found.append((str(example_speech(ctx)), ""))
    return found[:count]


def real_time_factor(ctx: Context, count: int) -> dict:
    from mmgpt import inputs
    from mmgpt.engine import AudioRequest

    engine = ctx.engine()
    rows = []
    for path, expected in utterances(ctx, count):
        started = time.perf_counter()
        clip = inputs.load_audio(path)
        loaded = time.perf_counter()
        last = None
        for last in engine.stream(PRESET, AudioRequest(clip.waveform)):
            pass
        done = time.perf_counter()
        rows.append({"file": path.rsplit("/", 1)[-1], "audio_s": clip.seconds, "load_s": loaded - started,
                     "transcribe_s": done - loaded, "tokens": last.tokens, "ttft_s": last.ttft_s,
                     "transcript": last.text, "expected": expected})
    audio = sum(r["audio_s"] for r in rows)
    busy = sum(r["load_s"] + r["transcribe_s"] for r in rows)
    return {"utterances": rows, "audio_s": audio, "processing_s": busy, "rtf": busy / audio,
            "model_only_rtf": sum(r["transcribe_s"] for r in rows) / audio}


def run(ctx: Context) -> Result:
    long = featurize(ctx, ctx.size(10, LONG_SECONDS))
    rtf = real_time_factor(ctx, ctx.size(1, 8))
    flac = long["flac"]
    return Result(
        figures=[
            Figure("long_flac_load_resample_s", flac["load_and_resample_s"], "s", None,
                   f"{long['seconds']} s of 44.1 kHz stereo FLAC -> mono 16 kHz (inputs.load_audio)"),
            Figure("long_log_mel_s", flac["log_mel_s"], "s", None, "log_mel_spectrogram of the whole recording"),
            Figure("long_total_x_real_time", long["seconds"] / flac["total_s"], "x", None,
                   "audio seconds per second of load + resample + featurize"),
            Figure("long_wav_load_resample_s", long["wav"]["load_and_resample_s"], "s"),
            Figure("speech_real_time_factor", rtf["rtf"], "x", None,
                   "(load + transcribe) / audio duration; below 1 is faster than real time"),
        ],
        details={"long_recording": long, "speech": rtf},
    )

"""Synthetic speech: espeak-ng speaks scene captions, numbers and short commands, with added noise.

Clean synthesized audio is cached on disk, keyed by (text, voice, speed, pitch); level, silence padding and
noise are applied afterwards from the utterance's seed, so the same utterance exists clean and at any SNR.

Shapes: a waveform is float32 `(n_samples,)` at `SAMPLE_RATE` (16 kHz).
"""

import hashlib
import json
import os
import random
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmgpt.audio import SAMPLE_RATE, to_mono_16k
from mmgpt.data.scenes import SPLITS, iter_captions, split_seed

ESPEAK = "espeak-ng"
CACHE_VERSION = 1  # bump when the cached audio would change for the same key
CACHE_PEAK = 0.9  # cached clips are peak-normalized to this, then stored as 16-bit FLAC
MAX_UTTERANCE_SECONDS = 8.0
SPEED_WPM = (130, 200)  # espeak -s range, words per minute
PITCH = (30, 70)  # espeak -p range, 0-99
SILENCE_SECONDS = (0.0, 0.3)  # random leading and trailing silence
PEAK_LEVEL = (0.3, 0.8)  # random peak level of the clean speech, full scale = 1
SNR_DB = (10.0, 30.0)  # random SNR range when none is given
NOISE_COLOURS = ("white", "pink")

# "en" is espeak's British English voice: "en-gb+VARIANT" silently drops the variant, "en+VARIANT" keeps it.
# Many variants over few base voices: held-out WER tracks how many distinct voices training hears.
TRAIN_VOICES = (
    "en-us", "en-us+f2", "en-us+m3", "en+m1", "en+f1", "en-gb-scotland+m2", "en-gb-scotland+f3",
    "en-gb-x-rp+m4", "en-gb-x-rp+f4", "en-gb-x-gbclan+m6", "en-gb-x-gbcwmd+m5", "en-gb-x-gbcwmd+f2",
    "en-us+m1", "en-us+f4", "en+m6", "en+f3", "en-gb-x-rp+m2", "en-us+Andy", "en+Annie", "en-gb-x-rp+Steph",
    "en-us+Michael", "en-gb-scotland+Paul",
)
# Held out for "test": base voices (Caribbean, New York) and variants (m7, f5) that training never hears.
TEST_VOICES = ("en-029+m7", "en-us-nyc+f5", "en-029+f5")

COMMANDS = (
    "stop", "go", "go left", "go right", "go forward", "go back", "turn left", "turn right", "wait",
    "start", "pause", "play music", "next song", "volume up", "volume down", "turn on the light",
    "turn off the light", "open the door", "close the door", "what time is it", "what day is it",
    "call home", "yes", "no", "cancel", "help", "repeat that", "take a picture", "show me the map",
    "set a timer", "read my messages", "how is the weather", "good morning", "good night", "thank you",
    "describe the picture", "count to ten", "sit down", "stand up", "come here",
)
CONTENT_WEIGHTS = {"caption": 0.5, "number": 0.2, "command": 0.3}  # share of each kind of utterance


@dataclass(frozen=True, eq=False)
class Utterance:
    waveform: np.ndarray  # float32 (n_samples,) at 16 kHz, at most MAX_UTTERANCE_SECONDS
    transcript: str  # exactly the text espeak spoke: lowercase, no punctuation, numbers as digits
    voice: str  # espeak voice, e.g. "en-us+m3"
    speed: int  # words per minute
    pitch: int  # espeak pitch, 0-99
    snr_db: float | None  # None when clean
    kind: str = ""  # "caption", "number" or "command"


@dataclass(frozen=True)
class _Spec:
    """Everything that decides one utterance; drawn from the dataset's rng before any synthesis."""

    text: str
    kind: str
    voice: str
    speed: int
    pitch: int
    lead_seconds: float
    trail_seconds: float
    peak: float
    snr_db: float
    noise_colour: str
    noise_seed: int


def default_cache_dir() -> Path:
    """`$MMGPT_CACHE_DIR/speech`, else `~/.cache/mmgpt/speech`."""
    root = os.environ.get("MMGPT_CACHE_DIR")
    return Path(root) / "speech" if root else Path.home() / ".cache" / "mmgpt" / "speech"


def voices_for(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise ValueError(f"unknown speech split {split!r}; expected one of {SPLITS}")
    return TEST_VOICES if split == "test" else TRAIN_VOICES


def _cache_path(cache_dir: Path, text: str, voice: str, speed: int, pitch: int) -> Path:
    key = json.dumps([CACHE_VERSION, text, voice, speed, pitch], ensure_ascii=False)
    digest = hashlib.sha256(key.encode()).hexdigest()
    return cache_dir / digest[:2] / f"{digest}.flac"


def _parse_espeak_wav(data: bytes) -> tuple[np.ndarray, int]:
    """int16 samples and sample rate of espeak's streamed WAV (its header sizes are placeholders)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError(f"{ESPEAK} did not write a WAV file ({len(data)} bytes)")
    position, sampling_rate = 12, None
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        if chunk == b"fmt ":
            sampling_rate = int.from_bytes(data[position + 12:position + 16], "little")
        elif chunk == b"data":
            body = data[position + 8:]
            return np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2"), sampling_rate
        position += 8 + size
    raise RuntimeError(f"{ESPEAK} wrote a WAV file without a data chunk")


def synthesize(text: str, voice: str, speed: int, pitch: int, cache_dir: str | Path | None = None) -> np.ndarray:
    """Clean speech for `text`, peak-normalized to CACHE_PEAK: float32 (n_samples,) at 16 kHz.

    Read from the cache when there; otherwise spoken by espeak-ng and written to the cache atomically
    (several processes may fill the same cache at once).
    """
    import soundfile

    path = _cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), text, voice, speed, pitch)
    if path.exists():
        samples, _ = soundfile.read(path, dtype="int16")
        return (samples / 32768).astype(np.float32)

    # text goes in on stdin, so a transcript can never be taken for a command-line option
    result = subprocess.run(
        [ESPEAK, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", "--stdin"],
        input=text.encode(), capture_output=True,
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"{ESPEAK} -v {voice} failed (exit {result.returncode}): {result.stderr.decode().strip()}")
    samples, sampling_rate = _parse_espeak_wav(result.stdout)
    audio = to_mono_16k(samples.astype(np.float32) / 32768, sampling_rate)
    if audio.size == 0 or not np.any(audio):
        raise RuntimeError(f"{ESPEAK} -v {voice} produced silence for a {len(text)}-character text")
    audio *= CACHE_PEAK / np.abs(audio).max()
    # quantize exactly as stored, so a cache hit returns the very same samples as this first call
    quantized = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    soundfile.write(temporary, quantized, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(temporary, path)
    return (quantized / 32768).astype(np.float32)


def _noise(rng: np.random.Generator, n_samples: int, colour: str) -> np.ndarray:
    """Unit-variance noise: float64 (n_samples,)."""
    if colour == "white":
        return rng.standard_normal(n_samples)
    if colour != "pink":
        raise ValueError(f"unknown noise colour {colour!r}; expected one of {NOISE_COLOURS}")
    n_fft = 1 << max(n_samples - 1, 1).bit_length()  # a power of two: FFTs of odd lengths are slow
    spectrum = np.fft.rfft(rng.standard_normal(n_fft))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size, dtype=np.float64), 1.0))  # power falls as 1/f
    pink = np.fft.irfft(spectrum, n=n_fft)[:n_samples]
    return pink / pink.std()


def add_noise(waveform: np.ndarray, snr_db: float, seed: int = 0, colour: str = "white") -> np.ndarray:
    """`waveform` plus seeded noise whose power is exactly `snr_db` below the waveform's: float32 (n_samples,).

    The power ratio is over the whole waveform; `snr_db=inf` returns a copy unchanged.
    """
    clean = np.asarray(waveform, dtype=np.float32)
    if np.isinf(snr_db) and snr_db > 0:
        return clean.copy()
    signal_power = float(np.mean(clean.astype(np.float64) ** 2))
    noise = _noise(np.random.default_rng(seed), clean.size, colour)
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / np.mean(noise**2))
    return (clean + noise).astype(np.float32)


def measure_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR of `noisy` against the `clean` signal it was made from, in dB."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    return float(10 * np.log10(np.mean(clean**2) / np.mean(noise**2)))


def _sample_spec(rng: random.Random, split: str, captions) -> _Spec:
    kind = rng.choices(tuple(CONTENT_WEIGHTS), weights=tuple(CONTENT_WEIGHTS.values()))[0]
    if kind == "caption":
        text = next(captions).replace(",", "")  # espeak pauses at commas anyway; transcripts carry no punctuation
    elif kind == "number":
        text = str(rng.randint(0, 999))
    else:
        text = rng.choice(COMMANDS)
    return _Spec(
        text=text, kind=kind, voice=rng.choice(voices_for(split)),
        speed=rng.randint(*SPEED_WPM), pitch=rng.randint(*PITCH),
        lead_seconds=rng.uniform(*SILENCE_SECONDS), trail_seconds=rng.uniform(*SILENCE_SECONDS),
        peak=rng.uniform(*PEAK_LEVEL), snr_db=rng.uniform(*SNR_DB),
        noise_colour=rng.choice(NOISE_COLOURS), noise_seed=rng.getrandbits(63),
    )


def _render(spec: _Spec, clean: np.ndarray, snr_db: float | None) -> Utterance:
    """Level, silence padding and noise on top of the cached clean speech."""
    max_samples = int(MAX_UTTERANCE_SECONDS * SAMPLE_RATE)
    if clean.size > max_samples:
        raise ValueError(
            f"{spec.voice} at {spec.speed} wpm speaks {spec.text!r} in {clean.size / SAMPLE_RATE:.1f} s, "
            f"over MAX_UTTERANCE_SECONDS={MAX_UTTERANCE_SECONDS}"
        )
    lead = int(spec.lead_seconds * SAMPLE_RATE)
    trail = int(spec.trail_seconds * SAMPLE_RATE)
    spare = max_samples - clean.size
    if lead + trail > spare:  # shrink the padding, never the speech
        lead, trail = lead * spare // (lead + trail), trail * spare // (lead + trail)
    speech = np.concatenate([
        np.zeros(lead, np.float32), clean * (spec.peak / np.abs(clean).max()), np.zeros(trail, np.float32)
    ]).astype(np.float32)
    snr = spec.snr_db if snr_db is None else snr_db
    if np.isinf(snr) and snr > 0:
        return Utterance(speech, spec.text, spec.voice, spec.speed, spec.pitch, None, spec.kind)
    noisy = add_noise(speech, snr, seed=spec.noise_seed, colour=spec.noise_colour)
    return Utterance(noisy, spec.text, spec.voice, spec.speed, spec.pitch, float(snr), spec.kind)


def speech_dataset(
    split: str, n: int, seed: int, cache_dir: str | Path | None = None, snr_db: float | None = None,
    workers: int = 2,
) -> list[Utterance]:
    """`n` utterances of `split`: "train" and "validation" use TRAIN_VOICES, "test" uses TEST_VOICES.

    snr_db: None draws a random SNR in SNR_DB per utterance; a number fixes it for all; `float("inf")` gives
    clean speech. Whatever snr_db is, the same (split, n, seed) gives the same texts, voices, levels and
    noise seeds, so clean and noisy versions line up utterance by utterance.
    """
    rng = random.Random(split_seed(f"speech/{split}", seed))
    voices_for(split)  # validates the split
    captions = iter_captions("train", rng.getrandbits(63))  # train-split grammar only: no held-out pairs
    specs = [_sample_spec(rng, split, captions) for _ in range(n)]

    keys = list(dict.fromkeys((s.text, s.voice, s.speed, s.pitch) for s in specs))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        clips = dict(zip(keys, pool.map(lambda key: synthesize(*key, cache_dir=cache_dir), keys)))
    return [_render(s, clips[(s.text, s.voice, s.speed, s.pitch)], snr_db) for s in specs]

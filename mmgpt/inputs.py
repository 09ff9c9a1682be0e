"""Turn what a user sent into clean values, or raise `InputError` with a message that names the problem and the fix.

- `load_image(value)` -> RGB `PIL.Image.Image`, EXIF rotation applied, at most `MAX_IMAGE_SIDE` pixels a side.
- `load_audio(value)` -> `AudioClip`: float32 mono `SAMPLE_RATE` waveform, at most `MAX_AUDIO_SECONDS` long.
- `clean_prompt(text, max_chars)` -> `(text, notes)`: control characters gone, at most `max_chars` characters.
- `load_question(text)` -> a typed question about a picture, at most `MAX_QUESTION_CHARS` characters.
- `load_conversation(value)` -> `Conversation`: the chat so far (gr.Chatbot messages, as the page or a crafted API call
  sends them), checked and bounded, and the (question, answer) turns a model reads from it.

Messages are `Message`s (a key into `mmgpt.i18n` plus parameters): `str()` gives English, `.text(lang)` any
language the app has. Logs get the kind of problem and sizes, never the user's content.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import os
import shutil
import subprocess
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .audio import SAMPLE_RATE, to_mono_16k
from .i18n import Message  # noqa: F401  (Message is part of this module's API)
from .requests import Turn

logger = logging.getLogger(__name__)

# --- limits -------------------------------------------------------------------------------------------------------
MAX_IMAGE_PIXELS = 50_000_000  # pixels declared in the header (50 megapixels); larger files are never decoded
MAX_IMAGE_SIDE = 2048  # pixels; larger pictures are shrunk (keeping the aspect ratio) right after decoding
MAX_ASPECT_RATIO = 20  # long side / short side; narrower strips are refused (1x1 pictures are fine)
MAX_DATA_URL_BYTES = 20_000_000  # bytes of a base64 `data:` image URL

MAX_AUDIO_SECONDS = 600  # seconds; longer recordings are cut to their first MAX_AUDIO_SECONDS (truncated=True)
MIN_AUDIO_SECONDS = 0.1  # seconds
MIN_SAMPLE_RATE = 4_000  # Hz; below this nothing of speech survives
MAX_SAMPLE_RATE = 384_000  # Hz
MAX_CHANNELS = 8
AUDIO_BLOCK_SAMPLES = 2_000_000  # samples (all channels) decoded from a file at a time: 8 MB of float32
SILENCE_PEAK_DBFS = -60.0  # dB below full scale: a recording whose loudest 30 ms frame is quieter is "silence"
CLIPPED_FRACTION = 0.001  # share of samples at full scale above which a recording counts as clipped
FFMPEG_TIMEOUT_SECONDS = 120  # wall-clock limit on one ffmpeg decode
FFMPEG_EXTENSIONS = ("webm", "m4a", "mp4", "aac", "mka", "mkv", "mov", "3gp", "wma", "asf")  # soundfile can't
FFMPEG_DEMUXERS = "matroska,webm,mov,mp4,m4a,3gp,aac,mp3,ogg,wav,flac,asf"  # the only containers ffmpeg may open

MAX_PROMPT_CHARS = 4_000  # characters; longer prompts keep their end (the engine trims to the model's context)
KEPT_CONTROL_CHARACTERS = "\n\t"

MAX_QUESTION_CHARS = 500  # characters of a typed question about a picture
MAX_QUESTION_SECONDS = 30  # seconds of a spoken question (a model that hears it whole may take less)
MAX_CONVERSATION_MESSAGES = 400  # questions, answers and notes in one conversation: about 100 questions
MAX_MESSAGE_CHARS = 4_000  # characters of one message; this app writes none longer (answers stop well before)
CHAT_ROLES = ("user", "assistant")
SPOKEN_MARK = "🎤 "  # starts the transcript of a spoken question in the chat; not part of what the model reads


class InputError(ValueError):
    """What the user sent cannot be used. `str(e)` is an English message; `e.message.text(lang)` translates it."""

    def __init__(self, key: str, **params: Any):
        self.message = Message(key, **params)
        super().__init__(str(self.message))

    @property
    def key(self) -> str:
        return self.message.key


# --- images -------------------------------------------------------------------------------------------------------


def load_image(value: Any, notes: list[Message] | None = None) -> Image.Image:
    """An RGB picture from a PIL image, a file path, or Gradio's file payload (a dict with "path" or "url").

    Refuses, with an `InputError`: nothing given; missing, empty, corrupt, truncated or non-image files; pictures
    declaring more than `MAX_IMAGE_PIXELS` (checked from the header, before any pixel is decoded); strips beyond
    `MAX_ASPECT_RATIO`:1. Accepts every mode PIL reads (palette, 16-bit, CMYK, alpha on white, animated: first
    frame), honours EXIF orientation, and shrinks pictures to at most `MAX_IMAGE_SIDE` a side.
    Remarks for the user (e.g. "only the first frame was used") are appended to `notes` if given.
    """
    notes = [] if notes is None else notes
    image = _open_image(value)
    try:
        _check_declared_size(image.size)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            image.seek(0)
            notes.append(Message("image_first_frame", frames=frames))
        if image.format == "JPEG":
            image.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # decode at a reduced scale when much larger
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            logger.info("image refused: %s while decoding", type(exc).__name__)
            raise InputError("image_corrupt") from None
        try:
            image = ImageOps.exif_transpose(image)
        except Exception as exc:  # a broken EXIF block should not cost the user their picture
            logger.info("EXIF orientation ignored: %s", type(exc).__name__)
        image = _to_rgb(image)
    except InputError:
        raise
    except (OSError, SyntaxError, EOFError) as exc:
        logger.info("image refused: %s while converting", type(exc).__name__)
        raise InputError("image_corrupt") from None
    if max(image.size) > MAX_IMAGE_SIDE:
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    return image


def _open_image(value: Any) -> Image.Image:
    """Open lazily (header only): the pixels are decoded later, after the size checks."""
    if isinstance(value, Image.Image):
        return value.copy() if value.readonly else value
    if isinstance(value, dict):
        url = value.get("url") or ""
        if not value.get("path") and url.startswith("data:"):
            return _open_image_bytes(_decode_data_url(url))
        value = value.get("path")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError("image_missing")
    if not isinstance(value, (str, os.PathLike)):
        raise InputError("image_missing")
    path = Path(value)
    if not path.is_file():
        logger.info("image refused: file not found")
        raise InputError("image_not_found")
    if path.stat().st_size == 0:
        raise InputError("image_empty_file")
    return _open_image_bytes(path)


def _open_image_bytes(source) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise InputError("image_empty_file")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check the size ourselves
            return Image.open(source)
    except Image.DecompressionBombError:
        logger.info("image refused: declared size above PIL's bomb limit")
        raise InputError("image_too_large_declared", max_megapixels=MAX_IMAGE_PIXELS // 1_000_000) from None
    except UnidentifiedImageError:
        if _has_image_signature(source):
            logger.info("image refused: image signature but an unreadable header")
            raise InputError("image_corrupt") from None
        logger.info("image refused: not an image format PIL knows")
        raise InputError("image_not_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        logger.info("image refused: %s while reading the header", type(exc).__name__)
        raise InputError("image_corrupt") from None


IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


def _has_image_signature(source) -> bool:
    """Does the file start like a picture? Tells a damaged picture from a file that never was one."""
    try:
        if isinstance(source, io.BytesIO):
            head = source.getvalue()[:16]
        else:
            with open(source, "rb") as file:
                head = file.read(16)
    except OSError:
        return False
    if head.startswith(b"RIFF"):
        return head[8:12] == b"WEBP"
    return head.startswith(IMAGE_SIGNATURES)


def _decode_data_url(url: str) -> bytes:
    header, _, data = url.partition(",")
    if len(data) > MAX_DATA_URL_BYTES * 4 // 3 + 4:
        raise InputError("image_too_large_declared", max_megapixels=MAX_IMAGE_PIXELS // 1_000_000)
    if ";base64" not in header:
        raise InputError("image_not_image")
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise InputError("image_corrupt") from None


def _check_declared_size(size: tuple[int, int]):
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError("image_corrupt")
    if width * height > MAX_IMAGE_PIXELS:
        logger.info("image refused: %dx%d pixels declared", width, height)
        raise InputError("image_too_large", width=width, height=height,
                         max_megapixels=MAX_IMAGE_PIXELS // 1_000_000)
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        logger.info("image refused: %dx%d aspect ratio", width, height)
        raise InputError("image_aspect", width=width, height=height, max_ratio=MAX_ASPECT_RATIO)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return _high_depth_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError):
        logger.info("image refused: mode %s cannot become RGB", mode)
        raise InputError("image_mode_unsupported", mode=mode) from None


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale to 8-bit: 16-bit ranges scale by 1/257, anything else by its min and max."""
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if low >= 0 and high <= 255 and image.mode != "F":
        scaled = values
    elif low >= 0 and high <= 65535 and image.mode != "F":
        scaled = values / 257.0
    elif high > low:
        scaled = (values - low) / (high - low) * 255.0
    else:
        scaled = np.zeros_like(values)
    grey = np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


# --- audio --------------------------------------------------------------------------------------------------------


@dataclass
class AudioClip:
    waveform: np.ndarray  # float32 `(n_samples,)`, mono, SAMPLE_RATE Hz, within [-1, 1]
    seconds: float  # duration of `waveform`
    truncated: bool = False  # True when the recording was longer than MAX_AUDIO_SECONDS and was cut
    notes: list[Message] = field(default_factory=list)  # remarks for the user (truncated, clipped, ...)


def load_audio(value: Any) -> AudioClip:
    """A clean mono 16 kHz clip from a file path, Gradio's `(sample_rate, array)` tuple, or its file payload.

    Arrays may be int16, int32, uint8 or float, shaped `(n,)` or `(n, channels)` with 1 to `MAX_CHANNELS`
    channels. Files are read with soundfile (wav, flac, mp3, ogg, ...), else decoded by ffmpeg (webm, m4a, ...).
    Refuses, with an `InputError`: nothing given; missing, empty, corrupt, truncated or non-audio files; sample
    rates outside `MIN_SAMPLE_RATE`..`MAX_SAMPLE_RATE`; silence. Keeps the first `MAX_AUDIO_SECONDS` of longer
    recordings and says so; replaces NaN/inf samples by silence and says so; notes clipping.
    """
    notes: list[Message] = []
    if isinstance(value, dict):
        value = value.get("path")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError("audio_missing")
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InputError("audio_bad_shape", shape=f"a sequence of {len(value)} items")
        sample_rate, samples = value
        waveform, truncated = _array_audio(sample_rate, samples, notes)
    elif isinstance(value, (str, os.PathLike)):
        waveform, truncated = _file_audio(Path(value), notes)
    else:
        raise InputError("audio_missing")
    return _finish(waveform, truncated, notes)


def _array_audio(sample_rate: Any, samples: Any, notes: list[Message]) -> tuple[np.ndarray, bool]:
    sample_rate = _check_rate(sample_rate)
    samples = np.asarray(samples)
    if samples.dtype.kind not in "iuf":
        raise InputError("audio_bad_dtype", dtype=str(samples.dtype))
    if samples.ndim == 2 and samples.shape[0] <= MAX_CHANNELS < samples.shape[1]:
        samples = samples.T  # (channels, n) as librosa writes it
    if samples.ndim not in (1, 2):
        raise InputError("audio_bad_shape", shape=tuple(samples.shape))
    if samples.ndim == 2:
        _check_channels(samples.shape[1])
    limit = int(MAX_AUDIO_SECONDS * sample_rate)
    truncated = samples.shape[0] > limit
    samples = samples[:limit]
    if samples.dtype.kind == "f":
        waveform = samples.astype(np.float32)
    elif samples.dtype.kind == "u":
        half = float(2 ** (8 * samples.dtype.itemsize - 1))
        waveform = ((samples.astype(np.float64) - half) / half).astype(np.float32)
    else:
        waveform = (samples.astype(np.float64) / float(2 ** (8 * samples.dtype.itemsize - 1))).astype(np.float32)
    return _to_clean_16k(waveform, sample_rate, notes), truncated


def _file_audio(path: Path, notes: list[Message]) -> tuple[np.ndarray, bool]:
    import soundfile

    if not path.is_file():
        logger.info("audio refused: file not found")
        raise InputError("audio_not_found")
    if path.stat().st_size == 0:
        raise InputError("audio_empty_file")
    try:
        with soundfile.SoundFile(str(path)) as sound:
            sample_rate = _check_rate(sound.samplerate)
            _check_channels(sound.channels)
            limit = int(MAX_AUDIO_SECONDS * sample_rate)
            levels, resample, pieces, frames = _Levels(), _resampler(sample_rate), [], 0
            # A few MB of FLAC can hold 600 s of 8 channels at 384 kHz, 7 GB decoded: read a block at a time.
            for block in sound.blocks(blocksize=max(1, AUDIO_BLOCK_SAMPLES // sound.channels), frames=limit + 1,
                                      dtype="float32", always_2d=True):
                kept = block[:max(0, limit - frames)]
                frames += len(block)
                pieces.append(resample(levels.clean(kept).mean(axis=1)))
            pieces.append(resample(np.zeros(0, np.float32), last=True))
            waveform = _librosa_length(np.concatenate(pieces), min(frames, limit), sample_rate)
    except InputError:
        raise
    except (RuntimeError, ValueError, TypeError, OSError, EOFError) as exc:  # soundfile can't: try ffmpeg
        logger.info("soundfile could not read the upload (%s); trying ffmpeg", type(exc).__name__)
        return _ffmpeg_audio(path, notes)
    return levels.finish(waveform, notes), frames > limit


def _resampler(sample_rate: int):
    """`resample(mono_block, last=False)` -> the block at SAMPLE_RATE, carrying the filter's state across blocks.
    The quality is librosa's default, which `to_mono_16k` uses for whole recordings."""
    import soxr

    if sample_rate == SAMPLE_RATE:
        return lambda block, last=False: block
    stream = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    return lambda block, last=False: stream.resample_chunk(np.ascontiguousarray(block, np.float32), last=last)


def _librosa_length(waveform: np.ndarray, frames: int, sample_rate: int) -> np.ndarray:
    """`waveform`, resampled from `frames` samples at `sample_rate`, cut or padded with silence to the length
    librosa gives a whole recording. soxr's stream sometimes ends a sample short of its one-shot call, and a file must
    give what the same samples give as an array."""
    if sample_rate == SAMPLE_RATE:
        return waveform
    size = int(np.ceil(frames * (float(SAMPLE_RATE) / sample_rate)))  # librosa.resample's own expression
    return np.pad(waveform[:size], (0, max(0, size - waveform.size)))


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def _ffmpeg_audio(path: Path, notes: list[Message]) -> tuple[np.ndarray, bool]:
    """Decode any container ffmpeg knows (and `FFMPEG_DEMUXERS` allows) straight to float32 mono 16 kHz."""
    extension = path.suffix.lower().lstrip(".")
    if not ffmpeg_available():
        if extension in FFMPEG_EXTENSIONS:
            logger.warning("an upload needs ffmpeg, which is not installed")
            raise InputError("audio_needs_ffmpeg", extension=extension)
        raise InputError("audio_unreadable")
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-protocol_whitelist", "file", "-format_whitelist", FFMPEG_DEMUXERS,  # no playlists, no network
        "-t", str(MAX_AUDIO_SECONDS + 1), "-i", str(path),
        "-vn", "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1",
    ]
    try:
        result = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        logger.warning("ffmpeg took longer than %d s on an upload", FFMPEG_TIMEOUT_SECONDS)
        raise InputError("audio_unreadable") from None
    if result.returncode != 0 or len(result.stdout) < 4:
        logger.info("ffmpeg could not decode the upload (exit code %d)", result.returncode)
        raise InputError("audio_unreadable")
    waveform = np.frombuffer(result.stdout[: len(result.stdout) // 4 * 4], dtype="<f4").astype(np.float32)
    limit = MAX_AUDIO_SECONDS * SAMPLE_RATE
    return _to_clean_16k(waveform[:limit], SAMPLE_RATE, notes), waveform.size > limit


def _check_rate(sample_rate: Any) -> int:
    try:
        rate = float(sample_rate)
    except (TypeError, ValueError):
        raise InputError("audio_bad_rate", rate=str(sample_rate)[:20], min_rate=MIN_SAMPLE_RATE,
                         max_rate=MAX_SAMPLE_RATE) from None
    if not math.isfinite(rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE or rate != int(rate):
        raise InputError("audio_bad_rate", rate=f"{rate:g}", min_rate=MIN_SAMPLE_RATE, max_rate=MAX_SAMPLE_RATE)
    return int(rate)


def _check_channels(channels: int):
    if not 1 <= channels <= MAX_CHANNELS:
        raise InputError("audio_bad_channels", channels=channels, max_channels=MAX_CHANNELS)


def _to_clean_16k(waveform: np.ndarray, sample_rate: int, notes: list[Message]) -> np.ndarray:
    """Float samples `(n,)` or `(n, channels)` -> finite, within [-1, 1], mono, SAMPLE_RATE."""
    levels = _Levels()
    return levels.finish(to_mono_16k(levels.clean(waveform), sample_rate), notes)


class _Levels:
    """What is wrong with a recording's levels, gathered a block at a time: non-finite samples (set to 0), a peak
    above full scale (the whole is scaled down) and clipping. Levels are judged before resampling, whose ringing
    would otherwise overshoot full scale on clipped input; scaling commutes with resampling, so it comes after."""

    def __init__(self):
        self.nonfinite, self.at_full_scale, self.samples, self.peak = 0, 0, 0, 0.0

    def clean(self, block: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(block)
        if bad.any():
            self.nonfinite += int(bad.sum())
            block = np.where(bad, np.float32(0.0), block).astype(np.float32)
        if block.size:
            magnitude = np.abs(block)
            self.peak = max(self.peak, float(magnitude.max()))
            self.at_full_scale += int(np.count_nonzero(magnitude >= 0.999))
            self.samples += block.size
        return block

    def finish(self, waveform: np.ndarray, notes: list[Message]) -> np.ndarray:
        """The mono SAMPLE_RATE `waveform` made of the cleaned blocks, scaled and clipped to [-1, 1]; notes why."""
        if self.nonfinite:
            notes.append(Message("audio_nonfinite", count=self.nonfinite))
        if self.peak > 1.0 + 1e-6:
            notes.append(Message("audio_rescaled", peak=f"{self.peak:.3g}"))
            waveform = waveform / np.float32(self.peak)
        elif self.samples and self.at_full_scale / self.samples > CLIPPED_FRACTION:
            notes.append(Message("audio_clipped"))
        return np.clip(waveform, -1.0, 1.0).astype(np.float32)


def _finish(waveform: np.ndarray, truncated: bool, notes: list[Message]) -> AudioClip:
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    if waveform.size == 0:
        raise InputError("audio_no_samples")
    seconds = waveform.size / SAMPLE_RATE
    if seconds < MIN_AUDIO_SECONDS:
        raise InputError("audio_too_short", seconds=f"{seconds:.2f}", min_seconds=MIN_AUDIO_SECONDS)
    if truncated:
        notes.append(Message("audio_truncated", max_seconds=MAX_AUDIO_SECONDS,
                             max_minutes=MAX_AUDIO_SECONDS // 60))
    loudest = _loudest_frame_dbfs(waveform)
    if loudest < SILENCE_PEAK_DBFS:
        logger.info("audio refused: silent (loudest frame %.0f dBFS)", loudest)
        raise InputError("audio_silence", peak_db=f"{loudest:.0f}" if math.isfinite(loudest) else "-∞")
    return AudioClip(waveform=waveform, seconds=seconds, truncated=truncated, notes=notes)


def _loudest_frame_dbfs(waveform: np.ndarray, frame_seconds: float = 0.03) -> float:
    """RMS level of the loudest `frame_seconds` frame, in dB relative to full scale."""
    frame = max(1, int(frame_seconds * SAMPLE_RATE))
    usable = waveform[: waveform.size // frame * frame] if waveform.size >= frame else waveform
    frames = usable.reshape(-1, min(frame, usable.size)).astype(np.float64)
    rms = float(np.sqrt(np.mean(frames**2, axis=1)).max())
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


# --- text ---------------------------------------------------------------------------------------------------------


def clean_prompt(text: Any, max_chars: int = MAX_PROMPT_CHARS, required: bool = True) -> tuple[str, list[Message]]:
    """Strip NUL and control characters (newline and tab stay), keep everything else (RTL, Chinese, emoji).

    Longer than `max_chars`: keep the last `max_chars` characters (the end is what a model continues) and note it.
    Empty or whitespace-only: `InputError` if `required`, else `("", [])`.
    """
    notes: list[Message] = []
    text = "" if text is None else str(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = [c for c in text if c in KEPT_CONTROL_CHARACTERS or unicodedata.category(c) not in ("Cc", "Cs")]
    removed = len(text) - len(kept)
    text = "".join(kept).strip()
    if not text:
        if required:
            raise InputError("prompt_empty")
        return "", notes
    if removed:
        notes.append(Message("prompt_control_removed", count=removed))
    if len(text) > max_chars:
        notes.append(Message("prompt_trimmed", chars=len(text), max_chars=max_chars))
        text = text[-max_chars:].lstrip()
    return text, notes


# --- questions and conversations -------------------------------------------------------------------------------


def load_question(text: Any) -> str:
    """A typed question, control characters removed; "" when none was typed. Not text, or longer than
    `MAX_QUESTION_CHARS`: `InputError` (a question is not trimmed: its end alone would ask something else)."""
    if text is not None and not isinstance(text, str):
        raise InputError("question_not_text", kind=type(text).__name__)
    question, _ = clean_prompt(text, max_chars=MAX_PROMPT_CHARS, required=False)
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError("question_too_long", chars=len(question), max_chars=MAX_QUESTION_CHARS)
    return question


@dataclass
class Conversation:
    """A chat about a picture, checked: what the page shows and what the model reads."""

    # gr.Chatbot messages, rebuilt from the checked text only: {"role", "content": str}, and for the app's own
    # notes {"role": "assistant", "content": "", "metadata": {"title": note, "status": "done"}}
    messages: list[dict] = field(default_factory=list)
    # the earlier (question, answer) turns a model reads, oldest first: notes, questions left unanswered (Stop)
    # and empty answers are left out; a spoken question is its transcript
    turns: tuple[Turn, ...] = ()


def load_conversation(value: Any) -> Conversation:
    """The conversation so far, from a `gr.Chatbot` value: a list of `{"role", "content", "metadata"}` messages
    whose content is text or a list of `{"type": "text", "text"}` parts (the page sends the latter).

    Refuses, with an `InputError` naming the message: anything but a list of such messages; more than
    `MAX_CONVERSATION_MESSAGES`; roles other than "user" and "assistant"; files or other components; messages over
    `MAX_MESSAGE_CHARS`. Control characters are removed. None or [] is a new conversation.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return Conversation()
    if not isinstance(value, (list, tuple)):
        raise InputError("conversation_not_list", kind=type(value).__name__)
    if len(value) > MAX_CONVERSATION_MESSAGES:
        logger.info("conversation refused: %d messages", len(value))
        raise InputError("conversation_too_long", count=len(value), max_messages=MAX_CONVERSATION_MESSAGES)
    messages, turns, question = [], [], None
    for index, message in enumerate(value, start=1):
        role, text, note = _chat_message(index, message)
        if note is not None:
            messages.append({"role": "assistant", "content": "", "metadata": {"title": note, "status": "done"}})
            continue
        messages.append({"role": role, "content": text})
        if role == "user":
            question = text.removeprefix(SPOKEN_MARK.strip()).strip() or None
        elif question is not None and text:
            turns.append(Turn(question, text))
            question = None
        else:  # an answer with no question before it, or a question answered with nothing (stopped at once)
            question = None
    return Conversation(messages, tuple(turns))


def _chat_message(index: int, message: Any) -> tuple[str, str, str | None]:
    """(role, text, note title or None) of one message, checked."""
    if not isinstance(message, dict):
        raise InputError("conversation_bad_message", index=index, kind=type(message).__name__)
    role = message.get("role")
    if role not in CHAT_ROLES:
        raise InputError("conversation_bad_role", index=index, role=repr(role)[:40])
    metadata = message.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("title"), str) and metadata["title"].strip():
        return role, "", _chat_text(index, metadata["title"])  # a note the app wrote: not part of the dialogue
    content = message.get("content")
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InputError("conversation_bad_content", index=index, kind=repr(kind)[:40])
            if sum(map(len, parts)) > MAX_MESSAGE_CHARS:
                break  # refused below, without joining megabytes first
        content = "\n".join(parts)
    elif content is None:
        content = ""
    elif not isinstance(content, str):
        raise InputError("conversation_bad_content", index=index, kind=repr(type(content).__name__))
    return role, _chat_text(index, content), None


def _chat_text(index: int, text: str) -> str:
    if len(text) > MAX_MESSAGE_CHARS:
        logger.info("conversation refused: a message of %d characters", len(text))
        raise InputError("conversation_message_too_long", index=index, chars=len(text), max_chars=MAX_MESSAGE_CHARS)
    cleaned, _ = clean_prompt(text, max_chars=MAX_MESSAGE_CHARS, required=False)
    return cleaned


def parse_number(value: Any, name: str, integer: bool = False, optional: bool = False) -> float | int | None:
    """A number from a slider, box or crafted API call; `None` for blank when `optional`. Ranges are checked by
    `GenerationParams`, which names the value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise InputError("number_invalid", name=name, value="nothing")
    if isinstance(value, bool):
        raise InputError("number_invalid", name=name, value=repr(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError("number_invalid", name=name, value=repr(value)[:40]) from None
    if not math.isfinite(number):
        raise InputError("number_invalid", name=name, value=repr(value)[:40])
    if integer:
        if number != int(number):
            raise InputError("number_invalid", name=name, value=f"{number:g} (a whole number is needed)")
        return int(number)
    return number


def check_choice(value: Any, choices: list[str], key: str) -> str:
    """`value` if it is one of `choices`, else an `InputError` (message `key`) listing them: a crafted API call,
    or a page older than the server."""
    if isinstance(value, str) and value in choices:
        return value
    raise InputError(key, value=repr(value)[:60], choices=", ".join(choices))

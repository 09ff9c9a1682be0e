"""What the engine is asked to do and what it answers: requests, generation settings and stream updates.

Plain frozen dataclasses with no torch in them, so the UI and the CLI can build them without loading a model.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

TEXT_TASKS = ("continue", "chat", "summarize", "translate", "answer")
MAX_NEW_TOKENS_LIMIT = 2048
MAX_TEMPERATURE = 2.0
MAX_TOP_K = 1000
MAX_REPETITION_PENALTY = 2.0
MAX_SEED = 2**32 - 1


@dataclass(frozen=True, eq=False)
class ImageRequest:
    preset_task: ClassVar[str] = "image"  # which of a preset's tasks (`presets.TASKS`) serves such a request

    image: Image.Image
    prompt: str = ""  # optional start of the caption (blip, mmgpt); ignored by models that take no text


@dataclass(frozen=True, eq=False)
class AudioRequest:
    preset_task: ClassVar[str] = "audio"

    waveform: np.ndarray  # float32 `(n_samples,)`, mono, 16 kHz, already validated by mmgpt.inputs
    language: str | None = None  # e.g. "en" or "english"; None lets a multilingual model detect it
    task: str = "transcribe"  # "transcribe" or "translate" (into English); whisper only

    def __post_init__(self):
        if self.waveform.ndim != 1 or self.waveform.size == 0:
            raise ValueError(f"waveform must be a non-empty 1-D array, got shape {self.waveform.shape}")
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f'audio task must be "transcribe" or "translate", got {self.task!r}')


@dataclass(frozen=True)
class Turn:
    """One earlier exchange of a conversation about a picture."""

    question: str  # what the user asked, as text (the transcript, for a spoken question)
    answer: str  # what the model answered


@dataclass(frozen=True, eq=False)
class AskRequest:
    """A question about a picture, typed or spoken, after the conversation's earlier turns."""

    preset_task: ClassVar[str] = "image"  # a picture's presets answer questions about it (and hear spoken ones)

    image: Image.Image
    # The typed question; for a spoken one, the words the asking model wrote down for it (`HeardQuestionRequest`),
    # or empty for a model that answers straight from the audio.
    question: str = ""
    audio: np.ndarray | None = None  # the spoken question: float32 `(n_samples,)`, mono, 16 kHz
    history: tuple[Turn, ...] = ()  # earlier turns about this picture, oldest first

    def __post_init__(self):
        if self.audio is not None and (self.audio.ndim != 1 or self.audio.size == 0):
            raise ValueError(f"the spoken question must be a non-empty 1-D array, got shape {self.audio.shape}")
        if self.audio is None and not self.question.strip():
            raise ValueError("ask a question: type it or record it")


@dataclass(frozen=True, eq=False)
class HeardQuestionRequest(AskRequest):
    """Write down a spoken question about a picture as the model that will answer it hears it, with the picture
    and the conversation before it. The text streamed is the question's words, not an answer; the answer then
    comes from an `AskRequest` with those words and the same audio. For models that write down what they hear
    before they answer (mmgpt-tiny from v4.14)."""

    def __post_init__(self):
        if self.audio is None or self.question:
            raise ValueError("a question to write down is a recording, with no words yet")
        super().__post_init__()


@dataclass(frozen=True)
class TextRequest:
    preset_task: ClassVar[str] = "text"

    prompt: str  # the text to continue, the message, the text to summarize or translate, or the question
    task: str = "continue"  # one of TEXT_TASKS; all but "continue" need an instruction-tuned (chat-lm) preset
    target_language: str = "French"  # for "translate"
    context: str = ""  # for "answer": optional passage the answer should come from

    def __post_init__(self):
        if self.task not in TEXT_TASKS:
            raise ValueError(f"text task must be one of {', '.join(TEXT_TASKS)}, got {self.task!r}")
        if not self.prompt.strip():
            raise ValueError("the prompt is empty: type some text first")


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 64  # upper bound on generated tokens, end-of-text included
    temperature: float = 0.0  # 0 is greedy decoding; above 0 samples from the softened distribution
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens whose probability reaches top_p
    top_k: int = 0  # keep only the k most likely tokens; 0 keeps all
    repetition_penalty: float = 1.0  # > 1 discourages repeating tokens already in the sequence; applies to greedy too
    seed: int | None = None  # makes sampling reproducible; None draws fresh randomness

    def __post_init__(self):
        _check_range("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT, integer=True)
        _check_range("temperature", self.temperature, 0.0, MAX_TEMPERATURE)
        _check_range("top_p", self.top_p, 0.0, 1.0)
        if self.top_p == 0.0:
            raise ValueError("top_p must be above 0 and at most 1, got 0")
        _check_range("top_k", self.top_k, 0, MAX_TOP_K, integer=True)
        _check_range("repetition_penalty", self.repetition_penalty, 1.0, MAX_REPETITION_PENALTY)
        if self.seed is not None:
            _check_range("seed", self.seed, 0, MAX_SEED, integer=True)

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0.0


def _check_range(name: str, value, low, high, integer: bool = False):
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {_number(low)} and {_number(high)}, got {_number(value)}")


def _number(value) -> str:
    return str(value) if isinstance(value, (int, np.integer)) else f"{value:g}"


@dataclass(frozen=True)
class StreamUpdate:
    text: str  # everything generated so far (all windows, for long audio)
    tokens: int  # tokens generated so far, special tokens included
    ttft_s: float | None  # seconds from the start of generation to the first generated token
    tokens_per_s: float | None  # decoding speed after the first token; None until there are two tokens
    done: bool  # True on the last update only
    window: int = 0  # which audio window the text is coming from (0-based)
    windows: int = 1  # how many windows the request was cut into
    notes: tuple = ()  # `i18n.Message`s for the user so far, e.g. that a long prompt was trimmed to fit the model
    # On the last update of a one-window answer: its token ids, so that `Engine.explain` reads exactly what the
    # model wrote (re-tokenizing the text can give other, and more, tokens). Empty otherwise.
    token_ids: tuple[int, ...] = ()
    # On the last update of an answer to a question (`AskRequest`) or of a description (`ImageRequest`): the mean
    # probability the model gave its tokens (special tokens such as end-of-text left out), in [0, 1]; low means it
    # was guessing. None otherwise.
    confidence: float | None = None

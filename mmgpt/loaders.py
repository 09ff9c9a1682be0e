"""Load a preset's checkpoint and turn requests into `generate()` inputs: one adapter per loader kind.

Everything model-family-specific lives here, so the engine only sees the `ModelAdapter` protocol. Every kind
loads through `from_pretrained(location)`, whether the location is a Hub id or a local directory, except
"whisper-ct2", which converts the CTranslate2 weights of a pinned pip package (`mmgpt.whisper_ct2`).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from huggingface_hub import is_offline_mode
from huggingface_hub.errors import HfHubHTTPError
from transformers import (
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    BlipForConditionalGeneration,
    BlipProcessor,
    VisionEncoderDecoderModel,
    WhisperForConditionalGeneration,
    WhisperProcessor,
)

from . import whisper_ct2
from .audio import SAMPLE_RATE
from .presets import OFFLINE_DEFAULT, PIP_SOURCE, TEXT_TASKS_BY_LOADER, Preset
from .requests import AskRequest, AudioRequest, HeardQuestionRequest, ImageRequest, TextRequest

logger = logging.getLogger(__name__)

IMAGE_BACKEND = "pil"  # PIL image processors: torchvision is not installed and must not be
WHISPER_START_TOKENS = 4  # <|startoftranscript|> <|language|> <|task|> <|notimestamps|>

# Vision-language models: one view of the picture (SmolVLM: 512 px, 64 tokens) instead of up to 16 tiles plus that
# view (1,088 tokens). Tiles read small print; without them an answer takes seconds on a CPU instead of a minute.
VLM_SPLIT_IMAGES = False
VLM_DESCRIBE_INSTRUCTION = "Describe this picture in one sentence."
WORD_JOINER = "\u2060"  # invisible; breaks a reserved token's name typed by a user (`as_typed_text`)

CHAT_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly and plainly."
CHAT_INSTRUCTIONS = {
    "chat": "{prompt}",
    "summarize": "Summarize the following text in two or three sentences.\n\n{prompt}",
    "translate": "Translate the following text into {target_language}. Reply with the translation only.\n\n{prompt}",
    "answer": "Answer the question in one or two sentences.\n\nQuestion: {prompt}",
    "answer_with_context": (
        "Answer the question in one or two sentences, using the context below.\n\n"
        "Context:\n{context}\n\nQuestion: {prompt}"
    ),
}


class PresetUnavailableError(RuntimeError):
    """The preset's files cannot be had (offline, not cached, missing from assets/). The message is for users;
    `preset` names the model, which need not be the one the user asked to answer (a question's listener)."""

    def __init__(self, message: str, preset: str | None = None):
        super().__init__(message)
        self.preset = preset

    def __reduce__(self):  # keeps `preset` across the engine's worker process
        return type(self), (str(self), self.preset)


class ModelAdapter(Protocol):
    tokenizer: Any  # what TextIteratorStreamer decodes with
    model: Any  # a transformers model with .generate
    max_audio_seconds: float | None  # longest audio one generate() call takes; None if the model hears nothing
    # Optional: answer_after_ids, the tokens that end the description a model gives before its answer
    # (MMGPTAdapter); the engine measures how sure the answer is after them.

    def prepare(self, request) -> dict:
        """`generate()` keyword arguments (input tensors) for one request, on the model's device and dtype."""
        ...

    def room_for_new_tokens(self, inputs: dict) -> int | None:
        """How many tokens the decoder can still write after `inputs` (its context length); None if unknown."""
        ...

    def extra_generate_kwargs(self, request) -> dict:
        """Generation settings this model needs for this kind of request beyond the user's (usually none)."""
        ...


# --- devices ----------------------------------------------------------------------------------------------------


def pick_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def dtype_for(device: str) -> torch.dtype:
    """bfloat16 on GPUs that support it, float16 on other GPUs and Apple silicon, float32 on CPU."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.float32


def on_model(batch, model) -> dict:
    """Move a processor's output to the model: every tensor to its device, floating ones to its dtype too."""
    moved = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor):
            dtype = model.dtype if value.is_floating_point() else None
            value = value.to(device=model.device, dtype=dtype)
        moved[name] = value
    return moved


def decoder_room(model, prompt_length: int) -> int | None:
    """Positions the model's text decoder has left after `prompt_length` tokens; None if its config doesn't say."""
    config = model.config.get_text_config(decoder=True)
    for name in ("max_target_positions", "max_position_embeddings"):
        positions = getattr(config, name, None)
        if isinstance(positions, int):
            return positions - prompt_length
    return None


def _pretrained_kwargs() -> dict:
    return {"trust_remote_code": False, "local_files_only": is_offline_mode()}


def _expect(request, kind: type, adapter_name: str):
    if not isinstance(request, kind):
        raise TypeError(f"{adapter_name} takes {kind.__name__}, got {type(request).__name__}")


# --- adapters ---------------------------------------------------------------------------------------------------


@dataclass
class CausalLMAdapter:
    """A decoder-only LM that continues the prompt (GPT-2)."""

    tokenizer: Any
    model: Any
    max_audio_seconds: float | None = None

    @classmethod
    def load(cls, location: str, device: str, dtype: torch.dtype):
        tokenizer = AutoTokenizer.from_pretrained(location, **_pretrained_kwargs())
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **_pretrained_kwargs())
        return cls(tokenizer, model.to(device).eval())

    def prepare(self, request) -> dict:
        _expect(request, TextRequest, type(self).__name__)
        if request.task != "continue":
            raise ValueError(f'this model only continues text; "{request.task}" needs an instruction-tuned model')
        return on_model(self.tokenizer(request.prompt, return_tensors="pt", split_special_tokens=True), self.model)

    def room_for_new_tokens(self, inputs: dict) -> int | None:
        return decoder_room(self.model, inputs["input_ids"].shape[-1])

    def extra_generate_kwargs(self, request) -> dict:
        return {}


@dataclass
class ChatLMAdapter(CausalLMAdapter):
    """An instruction-tuned LM: each text task becomes a system + user message through the chat template."""

    def prepare(self, request) -> dict:
        _expect(request, TextRequest, type(self).__name__)
        if request.task == "continue":  # a plain continuation, as a base LM takes it
            return super().prepare(request)
        messages = [
            {"role": "system", "content": CHAT_SYSTEM_PROMPT},
            {"role": "user", "content": as_typed_text(chat_instruction(request), self.tokenizer)},
        ]
        batch = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        return on_model(batch, self.model)


def as_typed_text(text: str, tokenizer) -> str:
    """`text` with the name of each of the tokenizer's added tokens (<|im_start|>, <image>, ...) broken by an
    invisible word joiner, so that what a user typed reads as characters, never as a turn marker or a picture slot.
    A chat template is rendered and tokenized whole, so `split_special_tokens` cannot single out the user's part."""
    for name in sorted(tokenizer.get_added_vocab(), key=len, reverse=True):
        if len(name) > 1 and name in text:
            text = text.replace(name, name[0] + WORD_JOINER + name[1:])
    return text


def chat_instruction(request: TextRequest) -> str:
    """The user message for a chat-lm text task."""
    key = "answer_with_context" if request.task == "answer" and request.context.strip() else request.task
    return CHAT_INSTRUCTIONS[key].format(
        prompt=request.prompt.strip(), target_language=request.target_language, context=request.context.strip()
    )


@dataclass
class VisionEncoderDecoderAdapter:
    """An image encoder with a text decoder (ViT + GPT-2); captions only, no text prompt."""

    tokenizer: Any
    model: Any
    image_processor: Any
    max_audio_seconds: float | None = None

    @classmethod
    def load(cls, location: str, device: str, dtype: torch.dtype):
        image_processor = AutoImageProcessor.from_pretrained(location, backend=IMAGE_BACKEND, **_pretrained_kwargs())
        tokenizer = AutoTokenizer.from_pretrained(location, **_pretrained_kwargs())
        model = VisionEncoderDecoderModel.from_pretrained(location, dtype=dtype, **_pretrained_kwargs())
        return cls(tokenizer, model.to(device).eval(), image_processor)

    def prepare(self, request) -> dict:
        _expect(request, ImageRequest, type(self).__name__)
        batch = self.image_processor(images=request.image.convert("RGB"), return_tensors="pt")
        return on_model(batch, self.model)

    def room_for_new_tokens(self, inputs: dict) -> int | None:
        return decoder_room(self.model, 1)  # the decoder starts from decoder_start_token_id

    def extra_generate_kwargs(self, request) -> dict:
        return {}


@dataclass
class BlipAdapter:
    """BLIP captioning; a non-empty prompt becomes the start of the caption."""

    tokenizer: Any
    model: Any
    processor: Any
    max_audio_seconds: float | None = None

    @classmethod
    def load(cls, location: str, device: str, dtype: torch.dtype):
        processor = BlipProcessor.from_pretrained(location, backend=IMAGE_BACKEND, **_pretrained_kwargs())
        model = BlipForConditionalGeneration.from_pretrained(location, dtype=dtype, **_pretrained_kwargs())
        return cls(processor.tokenizer, model.to(device).eval(), processor)

    def prepare(self, request) -> dict:
        _expect(request, ImageRequest, type(self).__name__)
        text = request.prompt.strip() or None
        batch = self.processor(images=request.image.convert("RGB"), text=text, return_tensors="pt")
        return on_model(batch, self.model)

    def room_for_new_tokens(self, inputs: dict) -> int | None:
        return decoder_room(self.model, inputs["input_ids"].shape[-1] if "input_ids" in inputs else 1)

    def extra_generate_kwargs(self, request) -> dict:
        return {}


@dataclass
class WhisperAdapter:
    """Whisper speech recognition: one generate() call per window of at most `chunk_length` seconds."""

    tokenizer: Any
    model: Any
    processor: Any
    max_audio_seconds: float | None = None

    @classmethod
    def load(cls, location: str, device: str, dtype: torch.dtype):
        processor = WhisperProcessor.from_pretrained(location, **_pretrained_kwargs())
        model = WhisperForConditionalGeneration.from_pretrained(location, dtype=dtype, **_pretrained_kwargs())
        return cls.serving(model.to(device), processor)

    @classmethod
    def load_ct2(cls, location: str, device: str, dtype: torch.dtype):
        """Whisper from the CTranslate2 weights of the pip package `location` names ("pip:NAME==VERSION", the one
        `whisper_ct2` pins), checked against their digest; on a CPU its Linear layers run in int8."""
        pinned = f"{whisper_ct2.PACKAGE}=={whisper_ct2.PACKAGE_VERSION}"
        if location != PIP_SOURCE + pinned:
            raise ValueError(f"the whisper-ct2 loader reads {PIP_SOURCE}{pinned}, not {location!r}")
        try:
            model, processor = whisper_ct2.load_whisper(dtype=dtype)
        except whisper_ct2.WeightsUnavailableError as exc:
            raise PresetUnavailableError(str(exc)) from exc
        if torch.device(device).type == "cpu":
            model = whisper_ct2.quantized_for_cpu(model)
        return cls.serving(model.to(device), processor)

    @classmethod
    def serving(cls, model, processor) -> "WhisperAdapter":
        seconds = processor.feature_extractor.n_samples / processor.feature_extractor.sampling_rate
        return cls(processor.tokenizer, model.eval(), processor, max_audio_seconds=seconds)

    def prepare(self, request) -> dict:
        _expect(request, AudioRequest, type(self).__name__)
        batch = self.processor.feature_extractor(request.waveform, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = on_model(batch, self.model)
        if getattr(self.model.generation_config, "is_multilingual", False):
            # language None: detected from the audio; task "translate" writes English
            inputs.update(language=request.language, task=request.task)
        return inputs

    def room_for_new_tokens(self, inputs: dict) -> int | None:
        return decoder_room(self.model, WHISPER_START_TOKENS)

    def extra_generate_kwargs(self, request) -> dict:
        return {}


@dataclass
class VisionLanguageAdapter:
    """An instruction-tuned vision-language model (SmolVLM, the Idefics3 family) through AutoModelForImageTextToText
    and its processor's chat template: answers typed questions about a picture, after the earlier turns, and
    describes a picture (a non-empty prompt becomes the start of the description). It cannot hear: a spoken
    question must be transcribed first."""

    tokenizer: Any
    model: Any
    processor: Any
    max_audio_seconds: float | None = None

    @classmethod
    def load(cls, location: str, device: str, dtype: torch.dtype):
        processor = AutoProcessor.from_pretrained(location, backend=IMAGE_BACKEND, **_pretrained_kwargs())
        model = AutoModelForImageTextToText.from_pretrained(location, dtype=dtype, **_pretrained_kwargs())
        return cls(processor.tokenizer, model.to(device).eval(), processor)

    def prepare(self, request) -> dict:
        if isinstance(request, AskRequest):
            if request.audio is not None:
                raise ValueError("this model cannot hear: transcribe the spoken question first")
            conversation = vlm_conversation(request, lambda typed: as_typed_text(typed, self.tokenizer))
            text = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        elif isinstance(request, ImageRequest):
            describe = [{"role": "user", "content": [{"type": "image"},
                                                     {"type": "text", "text": VLM_DESCRIBE_INSTRUCTION}]}]
            text = self.processor.apply_chat_template(describe, add_generation_prompt=True)
            if request.prompt.strip():
                text += " " + as_typed_text(request.prompt.strip(), self.tokenizer)
        else:
            raise TypeError(f"{type(self).__name__} takes AskRequest or ImageRequest, got {type(request).__name__}")
        batch = self.processor(text=text, images=[[request.image.convert("RGB")]], return_tensors="pt",
                               do_image_splitting=VLM_SPLIT_IMAGES)
        return on_model(batch, self.model)

    def room_for_new_tokens(self, inputs: dict) -> int | None:
        return decoder_room(self.model, inputs["input_ids"].shape[-1])

    def extra_generate_kwargs(self, request) -> dict:
        return {}


def vlm_conversation(request: AskRequest, as_text: Callable[[str], str] = str) -> list[dict]:
    """Chat-template messages for a question about a picture: the picture goes with the first question. Each typed
    text goes through `as_text`."""
    messages = []
    for turn in request.history:
        messages += [{"role": "user", "content": [{"type": "text", "text": as_text(turn.question)}]},
                     {"role": "assistant", "content": [{"type": "text", "text": as_text(turn.answer)}]}]
    messages.append({"role": "user", "content": [{"type": "text", "text": as_text(request.question)}]})
    messages[0]["content"].insert(0, {"type": "image"})
    return messages


@dataclass
class MMGPTAdapter:
    """This project's multimodal GPT: captions, transcribes, continues or answers a question about a picture (typed
    or spoken), depending on the request."""

    tokenizer: Any
    model: Any
    processor: Any
    max_audio_seconds: float | None = None

    @classmethod
    def load(cls, location: str, device: str, dtype: torch.dtype):
        import mmgpt.model  # noqa: F401  (registers mmgpt with the Auto classes)

        processor = AutoProcessor.from_pretrained(location, **_pretrained_kwargs())
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **_pretrained_kwargs())
        return cls(processor.tokenizer, model.to(device).eval(), processor, processor.max_audio_seconds)

    def prepare(self, request) -> dict:
        if isinstance(request, ImageRequest):
            batch = self.processor(images=request.image, text=request.prompt.strip() or None, return_tensors="pt")
        elif isinstance(request, AudioRequest):
            batch = self.processor(audio=request.waveform, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        elif isinstance(request, TextRequest):
            if request.task != "continue":
                raise ValueError(f'mmgpt-tiny only continues text; "{request.task}" needs an instruction-tuned model')
            batch = self.processor(text=request.prompt, return_tensors="pt")
        elif isinstance(request, AskRequest):
            batch = self._ask(request)
        else:
            raise TypeError(f"mmgpt takes an image, audio, text or question request, got {type(request).__name__}")
        return on_model(batch, self.model)

    def _ask(self, request: AskRequest):
        if not self.processor.can_ask:
            raise ValueError("This mmgpt checkpoint cannot answer questions: it was trained before questions existed "
                             "(mmgpt-tiny v4 and later can). Describe the picture instead, or choose a "
                             "vision-language model.")
        if request.audio is not None and len(request.audio) > self.max_audio_seconds * SAMPLE_RATE:
            raise ValueError(f"The spoken question is {len(request.audio) / SAMPLE_RATE:.1f} s long; this model "
                             f"hears at most {self.max_audio_seconds:.1f} s at once. Ask it in fewer words.")
        words = request.question.strip()
        spoken_answer = request.audio is not None and not isinstance(request, HeardQuestionRequest)
        if self.writes_heard_questions and spoken_answer and not words:
            raise ValueError("This mmgpt checkpoint writes a spoken question down before it answers: send the "
                             "recording as a HeardQuestionRequest first, then an AskRequest with the words it wrote "
                             "and the same recording.")
        if not self.writes_heard_questions and (isinstance(request, HeardQuestionRequest) or spoken_answer and words):
            raise ValueError("This mmgpt checkpoint answers a spoken question straight from its audio and does not "
                             "write it down: send an AskRequest with the recording and no words.")
        history = [(turn.question, turn.answer) for turn in request.history]
        return self.processor(images=request.image, text=words or None, audio=request.audio,
                              sampling_rate=SAMPLE_RATE, task="ask", history=[history], return_tensors="pt")

    @property
    def writes_heard_questions(self) -> bool:
        """Whether this checkpoint writes a spoken question's words before it answers (mmgpt-tiny from v4.14): the
        app then asks it for the words first (`HeardQuestionRequest`) and shows them as the user's turn."""
        return bool(getattr(self.processor, "transcribes_spoken_questions", False))

    @property
    def answer_after_ids(self) -> tuple[int, ...]:
        """The tokens that end an answer's description of the picture, for checkpoints that describe it first
        (`ConfidenceMeter` measures the answer after them); empty for those that answer straight away."""
        after = getattr(self.processor, "answer_after", None)
        return tuple(self.tokenizer.encode(after.rstrip(), add_special_tokens=False)) if after else ()

    def room_for_new_tokens(self, inputs: dict) -> int | None:
        return decoder_room(self.model, inputs["input_ids"].shape[-1])

    def extra_generate_kwargs(self, request) -> dict:
        """Text continuation never ends with end-of-text in training (it reads windows of a long corpus), so it
        must not end there now: left free, it often stops at once after caption-like words, answering nothing."""
        config = self.model.generation_config
        if isinstance(request, HeardQuestionRequest):
            return {"eos_token_id": self.processor.heard_question_ends}
        if not isinstance(request, TextRequest) or config.eos_token_id is None:
            return {}
        return {"suppress_tokens": [*(config.suppress_tokens or []), config.eos_token_id]}


ADAPTERS: dict[str, Callable[[str, str, torch.dtype], ModelAdapter]] = {
    "mmgpt": MMGPTAdapter.load,
    "causal-lm": CausalLMAdapter.load,
    "chat-lm": ChatLMAdapter.load,
    "vision-encoder-decoder": VisionEncoderDecoderAdapter.load,
    "blip": BlipAdapter.load,
    "whisper": WhisperAdapter.load,
    "whisper-ct2": WhisperAdapter.load_ct2,
    "vlm": VisionLanguageAdapter.load,
}
assert set(TEXT_TASKS_BY_LOADER) <= set(ADAPTERS)


def load_adapter(preset: Preset, device: str, dtype: torch.dtype) -> ModelAdapter:
    """Load `preset` on `device` in `dtype`, or raise PresetUnavailableError with a message for users."""
    location = preset.location
    if preset.is_local and not Path(location).is_dir():
        raise PresetUnavailableError(
            f'Model "{preset.name}" is not installed: its files are missing from {preset.source}.', preset.name
        )
    started = time.perf_counter()
    try:
        adapter = ADAPTERS[preset.loader](location, device, dtype)
    except PresetUnavailableError as exc:  # a loader's own reason (whisper-ct2's package): say whose it is
        exc.preset = exc.preset or preset.name
        raise
    except (OSError, HfHubHTTPError) as exc:
        logger.warning("could not load preset %s from %s: %s: %s", preset.name, location, type(exc).__name__, exc)
        if preset.is_local:
            message = f'Model "{preset.name}" could not be loaded: the files in {preset.source} are incomplete.'
        else:
            message = (
                f'Model "{preset.name}" could not be downloaded (no network access or not in the local cache). '
                f"Choose {OFFLINE_DEFAULT}, which ships with the app."
            )
        raise PresetUnavailableError(message, preset.name) from exc
    logger.info("loaded %s (%s) on %s as %s in %.1f s", preset.name, preset.loader, device, dtype,
                time.perf_counter() - started)
    return adapter

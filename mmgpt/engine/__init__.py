"""The cached, streaming, cancellable model wrapper behind the app and the CLI.

`Engine.load` loads each preset once and keeps the `max_loaded` most recently used ones. `Engine.stream` runs
`generate()` in a worker thread and yields a `StreamUpdate` for every generated token that adds text (a token that
ends inside a multi-byte character waits for the rest); tokens that come faster than one per `update_interval_s`
go out together, one update per interval (longer while more than two streams are open). Requests to one model that
run at the same moment share its decoding steps (`batching`). A text prompt too long for the model's context is
trimmed from the left, keeping its end, and the update says so in `notes`. Leaving the generator early, for any
reason, stops the worker within one decoding step:

    for update in engine.stream("gpt2", TextRequest("ROMEO:"), GenerationParams(max_new_tokens=32), cancel):
        print(update.text)

The package, by concern:
- `engine`: `Engine`, the front: checks a request against its preset, runs it, hands out updates, timeouts;
- `cache`: load once per preset, least recently used evicted;
- `segments`: what one `generate()` call takes (text trimmed to the context, a conversation's oldest turns left
  out, audio cut into windows);
- `worker`: one request's `generate()` calls in a thread of its own, and the decoding settings;
- `batching`: the decoding steps that requests to one model share, in that model's batch thread;
- `streaming`: tokens -> text updates, whole characters only, grouped per update interval;
- `confidence`: an answer's or a description's mean token probability, measured while it decodes.
- `remote`: remote presets' answers, streamed from an OpenAI-compatible server (nothing loads here);
- `process`: `EngineProcess`, the same engine in a worker process of its own (the app's default: the web server's
  threads then never hold the model's GIL).
"""

from ..loaders import PresetUnavailableError
from ..presets import UnknownPresetError
from ..requests import (
    AskRequest, AudioRequest, GenerationParams, HeardQuestionRequest, ImageRequest, StreamUpdate, TextRequest,
)
from .engine import Engine, GenerationTimeout
from .process import EngineProcess, LoadedModel, WorkerDiedError
from .remote import RemoteError
from .segments import audio_windows, fit_conversation, fit_to_context
from .worker import EventStop, generation_kwargs

__all__ = [
    "AskRequest",
    "AudioRequest",
    "Engine",
    "EngineProcess",
    "EventStop",
    "GenerationParams",
    "GenerationTimeout",
    "HeardQuestionRequest",
    "ImageRequest",
    "LoadedModel",
    "PresetUnavailableError",
    "RemoteError",
    "StreamUpdate",
    "TextRequest",
    "UnknownPresetError",
    "WorkerDiedError",
    "audio_windows",
    "fit_conversation",
    "fit_to_context",
    "generation_kwargs",
]

"""What every tab shares: turning exceptions into messages, streaming an answer into the page, the handlers' base
class, and the small widgets each tab has (model menu, stats line, word picker).

Every handler is a generator that yields the text so far; `user_facing_errors` is the one place where exceptions
become messages.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from mmgpt import inputs, overlays
from mmgpt.engine import Engine, GenerationParams, GenerationTimeout, PresetUnavailableError, RemoteError, StreamUpdate
from mmgpt.i18n import make_i18n, translate
from mmgpt.inputs import InputError, Message
from mmgpt.presets import Preset, default_preset

logger = logging.getLogger("mmgpt.app")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "assets" / "examples"
HEARTBEAT_S = 0.25  # a handler yields at least this often, so that Stop can close it (see `ResponsiveUpdates`)
PUMP_JOIN_S = 5.0  # how long a closed handler waits for its engine stream to wind down

I18N = make_i18n()


@dataclass
class Page:
    """What the tabs of one page share: the "show what the model saw" switch, the page's language (filled by
    `LANG_JS` on every event), and how model events are wrapped and registered."""

    show_maps: gr.Checkbox
    lang: gr.Textbox
    model_handler: Callable[[Callable], Callable]  # a model-running handler -> what the event calls
    errors: Callable[[Callable], Callable]  # a handler that runs no model -> what the event calls
    events: dict = field(default_factory=dict)  # keyword arguments of every model event


# --- the one place errors become messages ----------------------------------------------------------------------


def user_facing_errors(handler: Callable[..., Iterator], timeout_s: float | None = None) -> Callable[..., Iterator]:
    """Run a generator handler; turn what it raises into a `gr.Error` in the page's language, with no traceback.

    InputError / ValueError / RemoteError / PresetUnavailableError / GenerationTimeout carry messages meant for users
    (`timeout_s` is the engine's limit, which the timeout message names). Anything else is logged with its
    traceback and shown as a generic "try again". Logs name the handler and the exception type, never the user's
    content.
    """
    signature = inspect.signature(handler)

    @functools.wraps(handler)
    def run(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs).arguments
        lang = bound.get("lang") or ""
        try:
            yield from handler(*args, **kwargs)
        except gr.Error:
            raise
        except InputError as exc:
            logger.info("%s: refused input (%s)", handler.__name__, exc.key)
            raise error(exc.message.text(lang), lang) from None
        except RemoteError as exc:  # before its base class: it says what the server did, in the page's language
            logger.warning("%s: a remote model failed (%s)", handler.__name__, exc.message.key)
            raise error(exc.message.text(lang), lang) from None
        except PresetUnavailableError as exc:
            logger.warning("%s: preset unavailable", handler.__name__)
            raise error(translate("preset_unavailable", lang, detail=str(exc),
                                  preset=exc.preset or bound.get("preset")), lang) from None
        except GenerationTimeout as exc:
            logger.warning("%s: generation timed out", handler.__name__)
            raise error(translate("generation_timeout", lang, detail=str(exc), seconds=f"{timeout_s or 0:g}"),
                        lang) from None
        except ValueError as exc:
            logger.info("%s: invalid request (%s)", handler.__name__, type(exc).__name__)
            raise error(translate("request_invalid", lang, detail=str(exc)[:300]), lang) from None
        except Exception:
            logger.exception("%s failed", handler.__name__)
            raise error(translate("server_error", lang), lang) from None

    return run


@functools.cache
def _warn_once(message: str):
    logger.warning(message)


def error(message: str, lang: str) -> gr.Error:
    # the modal renders HTML: escape it, since messages may quote what a crafted request sent
    return gr.Error(html.escape(message, quote=False), title=translate("error_title", lang), print_exception=False)


def warn(notes: list[Message], lang: str):
    for note in notes:
        gr.Warning(html.escape(note.text(lang), quote=False), title=translate("warning_title", lang))


# --- streaming ---------------------------------------------------------------------------------------------------


def stats_line(update: StreamUpdate | None, lang: str, seed: int | None = None, waited_s: float | None = None) -> str:
    """"first token after 0.12 s · 35.1 tokens/s · 17 tokens", in the page's language."""
    if update is None or update.ttft_s is None:
        line = (translate("stats_waiting", lang) if waited_s is None
                else translate("stats_waited", lang, seconds=f"{waited_s:.0f}"))
    else:
        rate = "–" if update.tokens_per_s is None else f"{update.tokens_per_s:.1f}"
        line = translate("stats_line", lang, ttft=f"{update.ttft_s:.2f}", tokens_per_s=rate, tokens=update.tokens)
    if update is not None and update.windows > 1:
        line += " · " + translate("stats_window", lang, window=update.window + 1, windows=update.windows)
    if seed is not None:
        line += " · " + translate("stats_seed", lang, seed=seed)
    return line


def stream_text(engine: Engine, preset: str, request, params: GenerationParams, lang: str, *extra,
                warn_notes: bool = True, first: tuple | None = None):
    """Yield `(text so far, stats line, *extra)` per update, the first with `first` (if given) in place of `extra`;
    stop the engine's worker however this ends. The engine's notes (e.g. the prompt was trimmed to fit the model)
    show as warnings, unless not `warn_notes`.

    Returns `(text, stats line, last StreamUpdate or None)`, so that a handler can `yield from` it and go on with
    the answer (the update's `token_ids` are what `Engine.explain` should read)."""
    seed = params.seed if params.do_sample else None
    cancel = threading.Event()
    updates = engine.stream(preset, request, params, cancel)  # refuses a wrong preset or task before anything runs
    started = time.perf_counter()
    text, stats, shown, last = "", stats_line(None, lang, seed), 0, None
    # generation starts here, before the first yield, not after Gradio has sent the empty first update
    with closing(ResponsiveUpdates(updates, cancel)) as pending:
        yield (text, stats, *(extra if first is None else first))
        for update in pending:
            if update is None:  # nothing new yet
                if not text:
                    stats = stats_line(None, lang, seed, waited_s=time.perf_counter() - started)
            else:
                text, stats, last = update.text, stats_line(update, lang, seed), update
                if warn_notes:
                    warn(update.notes[shown:], lang)  # e.g. the prompt was trimmed to fit the model
                shown = len(update.notes)
            yield (text, stats, *extra)
    return text, stats, last


def relay(stream: Iterator, shape: Callable) -> Iterator:
    """Yield `shape(*item)` for each item of the generator `stream` and return what it returns; closing this closes
    `stream` (so that Stop still reaches the engine)."""
    with closing(stream):
        while True:
            try:
                item = next(stream)
            except StopIteration as end:
                return end.value
            yield shape(*item)


class ResponsiveUpdates:
    """Iterate `updates` on a helper thread, started at once; yield None every HEARTBEAT_S while none arrives.

    Gradio stops a generator (Stop button, closed tab) by closing it, which can only happen between two yields.
    The engine's stream blocks while a model loads and while a token has not completed a character,
    so it is pumped from here instead: iterating yields at least every HEARTBEAT_S, and `close()` (also on
    leaving the iteration early) sets `cancel`, which ends the engine's worker within one decoding step.

    When Gradio falls behind (it sends each update to the browser before asking for the next), the updates
    that queued up meanwhile go out as one, the newest: each holds all the text so far, so nothing is lost, and a
    busy server sends fewer, larger updates instead of a backlog.
    """

    def __init__(self, updates: Iterator[StreamUpdate], cancel: threading.Event):
        self._updates, self._cancel = updates, cancel
        self._mailbox: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._pump, name="mmgpt-stream-pump", daemon=True)
        self._thread.start()

    def _pump(self):
        try:
            with closing(self._updates):
                for update in self._updates:
                    self._mailbox.put(update)
                    if self._cancel.is_set():
                        break
        except BaseException as exc:  # re-raised in the handler's thread, where user_facing_errors words it
            self._mailbox.put(exc)
        finally:
            self._mailbox.put(_DONE)

    def __iter__(self) -> Iterator[StreamUpdate | None]:
        try:
            held = None  # an item that came after an update, kept for the next turn
            while True:
                if held is not None:
                    item, held = held, None
                else:
                    try:
                        item = self._mailbox.get(timeout=HEARTBEAT_S)
                    except queue.Empty:
                        yield None
                        continue
                while isinstance(item, StreamUpdate):  # the newest of the updates waiting
                    try:
                        newer = self._mailbox.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(newer, StreamUpdate):
                        held = newer
                        break
                    item = newer
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self):
        self._cancel.set()  # Stop, a closed tab, an error: the worker stops within one decoding step
        self._thread.join(timeout=PUMP_JOIN_S)


_DONE = object()


# --- handlers ----------------------------------------------------------------------------------------------------


class TabHandlers:
    """What every tab's handlers need: the engine (the shared model cache) and its presets. No per-user state
    here; the Image tab keeps only which picture each page shows (`shown_pictures`)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def presets(self, task: str) -> list[Preset]:
        return [preset for preset in self.engine.presets.values() if task in preset.tasks]

    def default(self, task: str) -> str | None:
        names = [preset.name for preset in self.presets(task)]
        try:
            name = default_preset(task)
        except ValueError as exc:  # a misspelt MMGPT_DEFAULT_<TASK>: the page still starts, and the log says why
            _warn_once(f"{exc}; the {task} tab starts with {names[0] if names else 'no model'} instead")
            name = None
        return name if name in names else (names[0] if names else None)

    def check_preset(self, task: str, name) -> str:
        return inputs.check_choice(name, [preset.name for preset in self.presets(task)], "preset_unknown")

    def explain(self, preset: str, request, text: str, show_maps, last: StreamUpdate | None = None,
                params: GenerationParams | None = None, lang: str = ""):
        """The answer's `explain.Explanation` (from the token ids of its `last` update when the engine gave them,
        else its text; `params` as it was generated with), or None when the toggle is off or there is no answer. Why
        something is missing from it is said in the page's language."""
        if not show_maps or not text:
            return None
        explanation = self.engine.explain(preset, request, (last and last.token_ids) or text, params)
        if explanation.note:
            gr.Info(html.escape(explanation.note.text(lang), quote=False))
        return explanation


# Picking a word or a token only redraws from what the answer's last update kept: no model runs, no queue.
PICKS = dict(preprocess=False, api_visibility="private", concurrency_limit=None)
SKIP_MAPS = (gr.skip(), gr.skip(), gr.skip())  # picture, word choices, maps: unchanged while text streams
STOP_WORDS = frozenset({"a", "an", "the", "of", "at", "and", "above", "left"})  # not where a map means much


def no_maps() -> tuple:
    """Picture, word choices, maps, emptied: a run's first update sends them, since the last answer's maps do not
    belong to this one's words. New each time: Gradio takes `value` out of an update it sends."""
    return None, gr.update(choices=[], value=None), None


def first_content_word(items) -> int:
    """Index of the first word worth a map (a colour or a shape rather than "a"), else 0."""
    return next((i for i, item in enumerate(items) if item.word.lower().strip(",.") not in STOP_WORDS), 0)


def picked_item(items, index):
    """`items[index]` for a word or token the user picked, or None when nothing valid is (a crafted call may
    send anything)."""
    if not items or isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(items):
        return None
    return items[index]


def curve_picture(waveform, curve):
    """The spectrogram with one word's attention under it; `curve` is (word, weights, seconds per step)."""
    word, weights, seconds_per_step = curve
    return overlays.spectrogram_with_attention(waveform, weights, seconds_per_step, word)


# --- widgets -----------------------------------------------------------------------------------------------------


def examples(pattern: str) -> list[list[str]]:
    return [[str(path)] for path in sorted(EXAMPLES_DIR.glob(pattern))] if EXAMPLES_DIR.is_dir() else []


def preset_dropdown(handlers: TabHandlers, task: str, label: str = "model") -> gr.Dropdown:
    return gr.Dropdown(choices=[p.name for p in handlers.presets(task)], value=handlers.default(task),
                       label=I18N(label), interactive=True)


def stats_box(label: str = "stats") -> gr.Textbox:
    return gr.Textbox(label=I18N(label), interactive=False, lines=1, max_lines=1)


def word_picker() -> gr.Radio:
    return gr.Radio(choices=[], label=I18N("map_word"), info=I18N("map_word_info"), interactive=True)


def hold_while_recording(recorder: gr.Audio, button: gr.Button):
    """Disable `button` from the start of a recording until the take has reached the server. Gradio puts the take
    in the player before it uploads it, and a press in between sends no recording (gradio-app/gradio#8184): the
    handler would then say that there is no question or nothing to transcribe. On a Space that upload takes a
    while. If the upload fails, Gradio stops short of `stop_recording`; clearing the recorder (its x, or picking a
    source) releases the button then. Hold and release are two round trips to the server, so a new recording started
    the instant the last one arrives could be released early; pressing Enter in a question box is not held."""
    def hold():
        return gr.update(interactive=False)

    def release():
        return gr.update(interactive=True)

    recorder.start_recording(hold, None, button, queue=False, api_visibility="private")
    for finished in (recorder.stop_recording, recorder.clear):
        finished(release, None, button, queue=False, api_visibility="private")

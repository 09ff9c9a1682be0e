"""mmgpt web demo: Image, Microphone and Text tabs over one cached, streaming, cancellable engine.

Wiring only. Models live in `mmgpt.engine`, input checks in `mmgpt.inputs`, strings in `mmgpt.i18n`, pictures in
`mmgpt.figures`. Every handler is a generator that yields the text so far; `user_facing_errors` is the one place
where exceptions become messages. Run `python app.py`, then open http://127.0.0.1:7860.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import gradio as gr
from gradio import route_utils

from mmgpt import figures, inputs, overlays
from mmgpt.engine import (
    AudioRequest,
    Engine,
    GenerationParams,
    GenerationTimeout,
    ImageRequest,
    PresetUnavailableError,
    StreamUpdate,
    TextRequest,
)
from mmgpt.i18n import make_i18n, translate
from mmgpt.inputs import InputError, Message
from mmgpt.presets import Preset, default_preset
from mmgpt.requests import MAX_NEW_TOKENS_LIMIT, MAX_REPETITION_PENALTY, MAX_SEED, MAX_TEMPERATURE, MAX_TOP_K

logger = logging.getLogger("mmgpt.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {value!r}") from None


# --- configuration (each read once, here; see the README's table) ------------------------------------------------
# Generations at once, all tabs together. Requests to one model share its decoding steps (mmgpt.engine.batching), so
# a batch of 16 costs little more per step than one request; models that cannot batch take turns on the cores.
CONCURRENCY_LIMIT = _env_int("MMGPT_CONCURRENCY", 16)
BATCHING = _env_int("MMGPT_BATCHING", 1) != 0  # 0: every request decodes on its own (the path before batching)
# torch threads per thread that runs a model (the batch thread, each request's prefill): 1 keeps them off each
# other's cores on a 2-core machine (see benchmarks/README.md, "Threads and OpenMP")
TORCH_THREADS = _env_int("MMGPT_TORCH_THREADS", 1)
QUEUE_MAX_SIZE = _env_int("MMGPT_QUEUE_SIZE", 16)  # waiting requests beyond which users hear "busy, try again"
MAX_LOADED_MODELS = _env_int("MMGPT_MAX_LOADED", 3)  # models kept in memory; the least recently used goes first
GENERATION_TIMEOUT_S = _env_int("MMGPT_TIMEOUT_S", 120)  # seconds one request may generate for
CACHE_SWEEP_S, CACHE_MAX_AGE_S = 600, 1800  # every 10 min delete uploads and outputs older than 30 min
MAX_UPLOAD_MB = _env_int("MMGPT_MAX_UPLOAD_MB", 100)
MAX_CAPTION_PROMPT_CHARS = 200  # the optional start of a caption
MAX_LANGUAGE_CHARS = 40
CONCURRENCY_GROUP = "models"  # every model event shares one concurrency limit
HEARTBEAT_S = 0.25  # a handler yields at least this often, so that Stop can close it (see `ResponsiveUpdates`)
PUMP_JOIN_S = 5.0  # how long a closed handler waits for its engine stream to wind down
SESSION_CAPACITY = 1000  # browser sessions whose Gradio state is kept (about 0.13 MB each; the app keeps no user state)

I18N = make_i18n()

# Sends the page's language (set by the browser locale or Settings -> Language) as each event's last input.
LANG_JS = """(...args) => {
    args[args.length - 1] = document.documentElement.lang || navigator.language || "en";
    return args;
}"""

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU(duration=GENERATION_TIMEOUT_S)
except ImportError:
    def gpu(fn):
        return fn


# --- Gradio's cache sweeper -------------------------------------------------------------------------------------


def _sweep_despite_uploads(sweep: Callable) -> Callable:
    """Gradio 6.31 sweeps its sets of cached files while new uploads are added to them. The RuntimeError that can
    follow ("Set changed size during iteration") ends the sweeper for the rest of the server's life, and the cache
    then grows without bound (the soak in benchmarks/stress.py found it). Sweep again instead."""

    @functools.wraps(sweep)
    def run(blocks, age):
        for _ in range(5):
            try:
                return sweep(blocks, age)
            except RuntimeError as exc:
                if "changed size during iteration" not in str(exc):
                    raise
        logger.warning("cache sweep skipped: files kept arriving; the next sweep tries again")

    run.survives_uploads = True
    return run


if not getattr(route_utils.delete_files_created_by_app, "survives_uploads", False):
    route_utils.delete_files_created_by_app = _sweep_despite_uploads(route_utils.delete_files_created_by_app)


# --- the one place errors become messages ----------------------------------------------------------------------


def user_facing_errors(handler: Callable[..., Iterator]) -> Callable[..., Iterator]:
    """Run a generator handler; turn what it raises into a `gr.Error` in the page's language, with no traceback.

    InputError / ValueError / PresetUnavailableError / GenerationTimeout carry messages meant for users. Anything
    else is logged with its traceback and shown as a generic "try again". Logs name the handler and the exception
    type, never the user's content.
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
            raise _error(exc.message.text(lang), lang) from None
        except PresetUnavailableError as exc:
            logger.warning("%s: preset unavailable", handler.__name__)
            raise _error(translate("preset_unavailable", lang, detail=str(exc), preset=bound.get("preset")),
                         lang) from None
        except GenerationTimeout as exc:
            logger.warning("%s: generation timed out", handler.__name__)
            raise _error(translate("generation_timeout", lang, detail=str(exc), seconds=GENERATION_TIMEOUT_S),
                         lang) from None
        except ValueError as exc:
            logger.info("%s: invalid request (%s)", handler.__name__, type(exc).__name__)
            raise _error(translate("request_invalid", lang, detail=str(exc)[:300]), lang) from None
        except Exception:
            logger.exception("%s failed", handler.__name__)
            raise _error(translate("server_error", lang), lang) from None

    return run


def _error(message: str, lang: str) -> gr.Error:
    # the modal renders HTML: escape it, since messages may quote what a crafted request sent
    return gr.Error(html.escape(message, quote=False), title=translate("error_title", lang), print_exception=False)


def _warn(notes: list[Message], lang: str):
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


def stream_text(engine: Engine, preset: str, request, params: GenerationParams, lang: str, *extra):
    """Yield `(text so far, stats line, *extra)` per update; stop the engine's worker however this ends.

    Returns `(text, stats line, token_ids)` of the last update (the ids are what `Engine.explain` should read), so
    that a handler can `yield from` it and go on with the answer."""
    seed = params.seed if params.do_sample else None
    cancel = threading.Event()
    updates = engine.stream(preset, request, params, cancel)  # refuses a wrong preset or task before anything runs
    started = time.perf_counter()
    text, stats, shown, token_ids = "", stats_line(None, lang, seed), 0, ()
    # generation starts here, before the first yield, not after Gradio has sent the empty first update
    with closing(ResponsiveUpdates(updates, cancel)) as pending:
        yield (text, stats, *extra)
        for update in pending:
            if update is None:  # nothing new yet
                if not text:
                    stats = stats_line(None, lang, seed, waited_s=time.perf_counter() - started)
            else:
                text, stats = update.text, stats_line(update, lang, seed)
                token_ids = update.token_ids
                for note in update.notes[shown:]:  # e.g. the prompt was trimmed to fit the model
                    gr.Warning(html.escape(note.text(lang), quote=False), title=translate("warning_title", lang))
                shown = len(update.notes)
            yield (text, stats, *extra)
    return text, stats, token_ids


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


class Handlers:
    """The event handlers, bound to one engine (the shared model cache). They keep no per-user state."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def presets(self, task: str) -> list[Preset]:
        return [preset for preset in self.engine.presets.values() if task in preset.tasks]

    def default(self, task: str) -> str | None:
        names = [preset.name for preset in self.presets(task)]
        try:
            name = default_preset(task)
        except ValueError:
            name = None
        return name if name in names else (names[0] if names else None)

    def preload(self):
        for task in ("image", "audio", "text"):
            if name := self.default(task):
                try:
                    self.engine.load(name)
                except PresetUnavailableError:
                    logger.warning("could not preload %s", name)

    def check_preset(self, task: str, name) -> str:
        return inputs.check_choice(name, [preset.name for preset in self.presets(task)], "preset_unknown")

    def caption(self, image, prompt, preset, show_maps=True, lang=""):
        """Describe a picture: (description so far, stats, heatmap, word choices, maps).

        With `show_maps`, the last update adds where the model looked for each word (one forward pass after the
        description has streamed) and the heatmap of its first content word."""
        preset = self.check_preset("image", preset)
        notes: list[Message] = []
        picture = inputs.load_image(image, notes)
        start, prompt_notes = inputs.clean_prompt(prompt, MAX_CAPTION_PROMPT_CHARS, required=False)
        _warn(notes + prompt_notes, lang)
        params = self.engine.preset(preset).params()
        request = ImageRequest(picture, start)
        text, stats, token_ids = yield from stream_text(self.engine, preset, request, params, lang, *SKIP_MAPS)
        explanation = self.explain(preset, request, text, show_maps, token_ids)
        maps = explanation and explanation.image_maps
        if not maps:
            yield (text, stats, None, gr.update(choices=[], value=None), None)
            return
        word = first_content_word(maps)
        yield (text, stats, overlays.heatmap_overlay(picture, maps[word].grid),
               gr.update(choices=overlays.word_choices(maps), value=word), [(m.word, m.grid) for m in maps])

    def image_word(self, image, word, maps):
        """The heatmap of the chosen word of the description, over the picture."""
        if (picked := picked_item(maps, word)) is None:
            yield None
            return
        yield overlays.heatmap_overlay(inputs.load_image(image, []), picked[1])

    def explain(self, preset: str, request, text: str, show_maps, token_ids=None):
        """The answer's `explain.Explanation` (from its token ids when the engine gave them, else its text), or
        None when the toggle is off or there is no answer."""
        if not show_maps or not text:
            return None
        explanation = self.engine.explain(preset, request, token_ids or text)
        if explanation.note:
            gr.Info(html.escape(explanation.note, quote=False))
        return explanation

    def transcribe(self, audio, preset, show_maps=True, lang=""):
        """Transcribe a recording: (transcript so far, stats, spectrogram, word choices, attention curves).

        With `show_maps`, the last update draws under the spectrogram when the model listened for the first
        content word, and offers every word for the same (one forward pass after the transcript)."""
        preset = self.check_preset("audio", preset)
        clip = inputs.load_audio(audio)
        _warn(clip.notes, lang)
        params = self.engine.preset(preset).params()
        request = AudioRequest(clip.waveform)
        # The picture is drawn once the transcript is done: drawing it first would delay the first words, and
        # drawing it meanwhile would slow them down (it shares the CPU and the GIL with decoding).
        text, stats, token_ids = yield from stream_text(self.engine, preset, request, params, lang, *SKIP_MAPS)
        explanation = self.explain(preset, request, text, show_maps, token_ids)
        curves = explanation and explanation.audio_curves
        if not curves:
            yield (text, stats, figures.spectrogram_image(clip.waveform), gr.update(choices=[], value=None), None)
            return
        word = first_content_word(curves)
        kept = [(c.word, c.weights, c.seconds_per_step) for c in curves]
        yield (text, stats, curve_picture(clip.waveform, kept[word]),
               gr.update(choices=overlays.word_choices(curves), value=word), kept)

    def audio_word(self, audio, word, curves):
        """The spectrogram with the chosen transcript word's attention over time under it."""
        if (picked := picked_item(curves, word)) is None:
            yield gr.skip()
            return
        yield curve_picture(inputs.load_audio(audio).waveform, picked)

    def reply(self, transcript, preset, lang=""):
        """Answer a transcript with a text model: (reply so far, stats)."""
        preset = self.check_preset("text", preset)
        if not isinstance(transcript, str) or not transcript.strip():
            raise InputError("reply_needs_transcript")
        text, notes = inputs.clean_prompt(transcript)
        _warn(notes, lang)
        tasks = self.engine.preset(preset).text_tasks
        request = TextRequest(text, task="chat" if "chat" in tasks else "continue")
        yield from stream_text(self.engine, preset, request, self.engine.preset(preset).params(), lang)

    def generate(self, prompt, task, target_language, context, preset, max_new_tokens, temperature, top_p, top_k,
                 repetition_penalty, seed, show_maps=True, lang=""):
        """Continue, chat, summarize, translate or answer: (output so far, stats, token confidences, alternatives).

        With `show_maps`, the last update colours each token by the probability the model gave it and keeps
        its top 5 alternatives for when one is selected (one forward pass after the output)."""
        preset = self.check_preset("text", preset)
        task = inputs.check_choice(task, list(TEXT_TASK_KEYS), "task_unknown")
        text_tasks = self.engine.preset(preset).text_tasks
        if task not in text_tasks:
            instruct = [p.name for p in self.presets("text") if task in p.text_tasks]
            raise InputError("task_needs_instruct", task=translate(TEXT_TASK_KEYS[task], lang), preset=preset,
                             instruct=" / ".join(instruct) or "an instruction-tuned model")
        text, notes = inputs.clean_prompt(prompt)
        language, language_notes = inputs.clean_prompt(target_language, MAX_LANGUAGE_CHARS, required=False)
        passage, context_notes = inputs.clean_prompt(context, required=False)
        _warn(notes + language_notes + context_notes, lang)
        params = self.settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        request = TextRequest(text, task=task, target_language=language or "French", context=passage)
        skip_outputs = (gr.skip(), gr.skip())  # the confidences come after the stream
        output, stats, token_ids = yield from stream_text(self.engine, preset, request, params, lang, *skip_outputs)
        explanation = self.explain(preset, request, output, show_maps, token_ids)
        tokens = explanation and explanation.tokens
        if not tokens:
            yield output, stats, None, None
            return
        yield output, stats, overlays.confidence_spans(tokens), [overlays.alternatives(t) for t in tokens]

    @staticmethod
    def token_alternatives(alternatives, evt: gr.SelectData):
        """The selected token's top 5 alternatives with their probabilities."""
        return picked_item(alternatives, evt.index)

    @staticmethod
    def settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed) -> GenerationParams:
        """GenerationParams from the sliders (or a crafted API call); a blank seed draws one when sampling."""
        values = dict(
            max_new_tokens=inputs.parse_number(max_new_tokens, "max_new_tokens", integer=True),
            temperature=inputs.parse_number(temperature, "temperature"),
            top_p=inputs.parse_number(top_p, "top_p"),
            top_k=inputs.parse_number(top_k, "top_k", integer=True),
            repetition_penalty=inputs.parse_number(repetition_penalty, "repetition_penalty"),
            seed=inputs.parse_number(seed, "seed", integer=True, optional=True),
        )
        if values["seed"] is None and values["temperature"] > 0:
            values["seed"] = secrets.randbelow(MAX_SEED)  # shown in the stats line, so the text can be had again
        try:
            return GenerationParams(**values)
        except ValueError as exc:
            raise InputError("settings_invalid", detail=str(exc)) from None


SKIP_MAPS = (gr.skip(), gr.skip(), gr.skip())  # picture, word choices, maps: unchanged while text streams
STOP_WORDS = frozenset({"a", "an", "the", "of", "at", "and", "above", "left"})  # not where a map means much


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


TEXT_TASK_KEYS = {"continue": "task_continue", "chat": "task_chat", "summarize": "task_summarize",
                  "translate": "task_translate", "answer": "task_answer"}


# --- layout ------------------------------------------------------------------------------------------------------


def _examples(pattern: str) -> list[list[str]]:
    return [[str(path)] for path in sorted(EXAMPLES_DIR.glob(pattern))] if EXAMPLES_DIR.is_dir() else []


def _preset_dropdown(handlers: Handlers, task: str, label: str = "model") -> gr.Dropdown:
    return gr.Dropdown(choices=[p.name for p in handlers.presets(task)], value=handlers.default(task),
                       label=I18N(label), interactive=True)


def _stats_box() -> gr.Textbox:
    return gr.Textbox(label=I18N("stats"), interactive=False, lines=1, max_lines=1)


def _word_picker() -> gr.Radio:
    return gr.Radio(choices=[], label=I18N("map_word"), info=I18N("map_word_info"), interactive=True)


def _task_fields(task: str):
    """Show the target language for Translate and the context for Answer."""
    return gr.update(visible=task == "translate"), gr.update(visible=task == "answer")


def build_demo(engine: Engine | None = None) -> gr.Blocks:
    """The app; `engine` is the shared model cache (tests pass one with their own presets)."""
    engine = engine or Engine(max_loaded=MAX_LOADED_MODELS, timeout_s=GENERATION_TIMEOUT_S, batching=BATCHING,
                              threads=TORCH_THREADS)
    handlers = Handlers(engine)
    if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU runs handlers in a fork: load the defaults in this process
        handlers.preload()
    events = dict(concurrency_id=CONCURRENCY_GROUP, preprocess=False, js=LANG_JS)

    def handler(method):
        return user_facing_errors(gpu(method))

    with gr.Blocks(title="mmgpt", analytics_enabled=False, delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        lang = gr.Textbox(value="", visible=False)  # filled by LANG_JS on every event
        gr.Markdown("# " + I18N("app_title"))
        gr.Markdown(I18N("app_intro"))
        show_maps = gr.Checkbox(value=True, label=I18N("show_maps"), info=I18N("show_maps_info"))

        with gr.Tab(I18N("tab_image")):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"],
                                     label=I18N("image_input"), height=320)
                    image_prompt = gr.Textbox(value="", label=I18N("image_prompt"), max_lines=1,
                                              placeholder=I18N("image_prompt_placeholder"))
                    image_preset = _preset_dropdown(handlers, "image")
                    with gr.Row():
                        describe = gr.Button(I18N("describe"), variant="primary")
                        image_stop = gr.Button(I18N("stop"), variant="stop")
                with gr.Column():
                    description = gr.Textbox(label=I18N("description"), lines=6, interactive=False,
                                             buttons=["copy"])
                    image_stats = _stats_box()
                    image_words = _word_picker()
                    heatmap = gr.Image(label=I18N("heatmap"), type="pil", interactive=False, format="png", height=256)
                    image_maps = gr.State(None)  # [(word, patch grid)] of the last description
            if image_examples := _examples("*.png"):
                gr.Examples(image_examples, inputs=[image], label=I18N("examples"), cache_examples=False)

        with gr.Tab(I18N("tab_microphone")):
            with gr.Row():
                with gr.Column():
                    audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label=I18N("audio_input"))
                    audio_preset = _preset_dropdown(handlers, "audio")
                    with gr.Row():
                        transcribe = gr.Button(I18N("transcribe"), variant="primary")
                        audio_stop = gr.Button(I18N("stop"), variant="stop")
                with gr.Column():
                    transcript = gr.Textbox(label=I18N("transcript"), lines=4, interactive=False, buttons=["copy"])
                    audio_stats = _stats_box()
            spectrogram = gr.Image(label=I18N("spectrogram"), type="pil", interactive=False, format="png")
            audio_words = _word_picker()
            audio_curves = gr.State(None)  # [(word, weights over time, seconds per step)] of the last transcript
            if audio_examples := _examples("*.wav"):
                gr.Examples(audio_examples, inputs=[audio], label=I18N("examples"), cache_examples=False)
            with gr.Row():
                with gr.Column():
                    reply_preset = _preset_dropdown(handlers, "text", "reply_model")
                    with gr.Row():
                        reply = gr.Button(I18N("reply"), variant="primary")
                        reply_stop = gr.Button(I18N("stop"), variant="stop")
                with gr.Column():
                    reply_output = gr.Textbox(label=I18N("reply_output"), lines=4, interactive=False,
                                              buttons=["copy"])
                    reply_stats = _stats_box()

        with gr.Tab(I18N("tab_text")):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label=I18N("prompt"), placeholder=I18N("prompt_placeholder"), lines=5)
                    task = gr.Radio([(I18N(key), name) for name, key in TEXT_TASK_KEYS.items()], value="continue",
                                    label=I18N("task"), info=I18N("task_info"))
                    target_language = gr.Textbox(value="French", label=I18N("target_language"), max_lines=1,
                                                 visible=False)
                    context = gr.Textbox(value="", label=I18N("context"), lines=2, visible=False)
                    text_preset = _preset_dropdown(handlers, "text")
                    with gr.Accordion(I18N("settings"), open=False):
                        max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS_LIMIT // 4, value=64, step=1,
                                                   label=I18N("max_new_tokens"))
                        temperature = gr.Slider(0.0, MAX_TEMPERATURE, value=0.0, step=0.05, label=I18N("temperature"))
                        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label=I18N("top_p"))
                        top_k = gr.Slider(0, min(MAX_TOP_K, 200), value=0, step=1, label=I18N("top_k"))
                        repetition_penalty = gr.Slider(1.0, MAX_REPETITION_PENALTY, value=1.0, step=0.05,
                                                       label=I18N("repetition_penalty"))
                        seed = gr.Number(value=None, precision=0, minimum=0, maximum=MAX_SEED, label=I18N("seed"))
                    with gr.Row():
                        generate = gr.Button(I18N("generate"), variant="primary")
                        text_stop = gr.Button(I18N("stop"), variant="stop")
                with gr.Column():
                    output = gr.Textbox(label=I18N("output"), lines=12, interactive=False, buttons=["copy"])
                    text_stats = _stats_box()
                    confidence = gr.HighlightedText(label=I18N("confidence"), color_map=overlays.CONFIDENCE_COLOURS,
                                                    combine_adjacent=False, show_legend=True)
                    alternatives = gr.Label(num_top_classes=overlays.TOP_ALTERNATIVES, label=I18N("alternatives"))
                    token_alternatives = gr.State(None)  # [{token: probability}] per token of the last output

        caption_event = describe.click(handler(handlers.caption), [image, image_prompt, image_preset, show_maps, lang],
                                       [description, image_stats, heatmap, image_words, image_maps],
                                       api_name="caption", **events)
        transcribe_event = transcribe.click(handler(handlers.transcribe), [audio, audio_preset, show_maps, lang],
                                            [transcript, audio_stats, spectrogram, audio_words, audio_curves],
                                            api_name="transcribe", **events)
        reply_event = reply.click(handler(handlers.reply), [transcript, reply_preset, lang],
                                  [reply_output, reply_stats], api_name="reply", **events)
        generate_event = generate.click(
            handler(handlers.generate),
            [prompt, task, target_language, context, text_preset, max_new_tokens, temperature, top_p, top_k,
             repetition_penalty, seed, show_maps, lang],
            [output, text_stats, confidence, token_alternatives], api_name="generate", **events,
        )
        # Picking a word or a token only redraws from what the answer's last update kept: no model runs.
        picks = dict(preprocess=False, api_visibility="private", concurrency_limit=None)
        image_words.input(user_facing_errors(handlers.image_word), [image, image_words, image_maps], heatmap, **picks)
        audio_words.input(user_facing_errors(handlers.audio_word), [audio, audio_words, audio_curves], spectrogram,
                          **picks)
        confidence.select(handlers.token_alternatives, token_alternatives, alternatives, queue=False,
                          api_visibility="private")
        task.change(_task_fields, task, [target_language, context], queue=False, api_visibility="private")
        for stop, event in ((image_stop, caption_event), (audio_stop, transcribe_event), (reply_stop, reply_event),
                            (text_stop, generate_event)):
            stop.click(None, None, None, cancels=[event])

    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)
    return demo


def server_name() -> str:
    """127.0.0.1 unless GRADIO_SERVER_NAME says otherwise; 0.0.0.0 on a Hugging Face Space, as Spaces require."""
    return os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")


def launch_kwargs(**overrides) -> dict:
    """What `demo.launch` gets, here and in the tests."""
    return {
        "server_name": server_name(),
        "i18n": I18N,
        "max_file_size": f"{MAX_UPLOAD_MB}mb",
        "ssr_mode": False,
        "mcp_server": False,
        "show_error": False,  # unexpected errors stay generic; user_facing_errors words the expected ones
        "state_session_capacity": SESSION_CAPACITY,  # Gradio's default, 10,000, would hold about 1.3 GB
        **overrides,
    }


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("MMGPT_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build_demo().launch(**launch_kwargs())

"""mmgpt web demo: Image, Microphone and Text tabs over one cached, streaming, cancellable engine.

Wiring only: the configuration, the page and the server. Each tab's layout and handlers live in a module of their
own (`mmgpt.ui.image_tab`, `audio_tab`, `text_tab`; what they share in `mmgpt.ui.common`). Models live in
`mmgpt.engine`, input checks in `mmgpt.inputs`, strings in `mmgpt.i18n`. Run `python app.py`, then open
http://127.0.0.1:7860.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

import gradio as gr
from gradio import route_utils

from mmgpt.engine import Engine, EngineProcess, PresetUnavailableError
from mmgpt.ui import audio_tab, image_tab, text_tab
from mmgpt.ui.common import I18N, Page, user_facing_errors

logger = logging.getLogger("mmgpt.app")


def _env_int(name: str, default: int, minimum: int | None = None) -> int:
    value = os.environ.get(name, "").strip()
    try:
        number = int(value) if value else default
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {value!r}") from None
    if minimum is not None and number < minimum:  # 0 requests at once would queue every request for ever
        raise SystemExit(f"{name} must be at least {minimum}, got {number}")
    return number


# --- configuration (each read once, here; see the README's table) ------------------------------------------------
# Generations at once, all tabs together. Requests to one model share its decoding steps (mmgpt.engine.batching), so
# a batch of 16 costs little more per step than one request; models that cannot batch take turns on the cores.
CONCURRENCY_LIMIT = _env_int("MMGPT_CONCURRENCY", 16, minimum=1)
BATCHING = _env_int("MMGPT_BATCHING", 1) != 0  # 0: every request decodes on its own (the path before batching)
# torch threads per thread that runs a model (the batch thread, each request's prefill): 1 keeps them off each
# other's cores on a 2-core machine (see benchmarks/README.md, "Threads and OpenMP")
TORCH_THREADS = _env_int("MMGPT_TORCH_THREADS", 1, minimum=1)
# 1: the models run in a worker process of their own, where no web-server thread holds their GIL (tokens reach the
# browser at the model's pace; benchmarks/README.md). ZeroGPU runs handlers in a fork of this process, which must
# hold the models itself, so there it is always 0.
ENGINE_PROCESS = _env_int("MMGPT_ENGINE_PROCESS", 1) != 0 and not os.environ.get("SPACES_ZERO_GPU")
QUEUE_MAX_SIZE = _env_int("MMGPT_QUEUE_SIZE", 16, minimum=1)  # waiting requests beyond which users hear "busy"
MAX_LOADED_MODELS = _env_int("MMGPT_MAX_LOADED", 3, minimum=1)  # models kept in memory; least recently used goes first
GENERATION_TIMEOUT_S = _env_int("MMGPT_TIMEOUT_S", 120, minimum=1)  # seconds one request may generate for
CACHE_SWEEP_S, CACHE_MAX_AGE_S = 600, 1800  # every 10 min delete uploads and outputs older than 30 min
MAX_UPLOAD_MB = _env_int("MMGPT_MAX_UPLOAD_MB", 100, minimum=1)
CONCURRENCY_GROUP = "models"  # every model event shares one concurrency limit
SESSION_CAPACITY = 1000  # browser sessions whose Gradio state is kept (about 0.13 MB each; the app keeps no user
# state but which picture each page shows, mmgpt/ui/shown_pictures.py)

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


# --- the page ----------------------------------------------------------------------------------------------------


class Handlers(image_tab.ImageHandlers, audio_tab.AudioHandlers, text_tab.TextHandlers):
    """Every tab's event handlers, bound to one engine (the shared model cache). They keep no per-user state but
    which picture each page shows (`image_tab.ImageHandlers.shown_pictures`)."""

    def preload(self):
        for name in {*(self.default(task) for task in ("image", "audio", "text")), self.default_asking()} - {None}:
            try:
                self.engine.load(name)
            except PresetUnavailableError:
                logger.warning("could not preload %s", name)


def make_engine(presets=None) -> Engine | EngineProcess:
    """The engine this configuration asks for (`presets`: the default list unless given)."""
    kind = EngineProcess if ENGINE_PROCESS else Engine
    return kind(max_loaded=MAX_LOADED_MODELS, timeout_s=GENERATION_TIMEOUT_S, batching=BATCHING,
                threads=TORCH_THREADS, presets=presets)


def build_demo(engine: Engine | EngineProcess | None = None) -> gr.Blocks:
    """The app; `engine` is the shared model cache (tests pass one with their own presets)."""
    engine = engine or make_engine()
    handlers = Handlers(engine)
    if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU runs handlers in a fork: load the defaults in this process
        handlers.preload()
    errors = functools.partial(user_facing_errors, timeout_s=engine.timeout_s)

    with gr.Blocks(title="mmgpt", analytics_enabled=False, delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        lang = gr.Textbox(value="", visible=False)  # filled by LANG_JS on every event
        gr.Markdown("# " + I18N("app_title"))
        gr.Markdown(I18N("app_intro"))
        show_maps = gr.Checkbox(value=True, label=I18N("show_maps"), info=I18N("show_maps_info"))
        page = Page(show_maps, lang, model_handler=lambda method: errors(gpu(method)), errors=errors,
                    events=dict(concurrency_id=CONCURRENCY_GROUP, preprocess=False, js=LANG_JS))
        image_tab.build(handlers, page)
        audio_tab.build(handlers, page)
        text_tab.build(handlers, page)

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

"""`EngineProcess`: an `Engine` in a worker process of its own, behind the same methods the app calls.

Why: the model's batch thread runs a tiny model whose every step is mostly Python, and every torch op it calls
releases the GIL and must take it back. In the web server's process, Gradio's event loop, the handlers and the
update pumps hold that GIL often enough to slow decoding to 0.70-0.78 of its in-process speed, and to 1.24x with 8
clients where the engine alone makes 2.4x (benchmarks/README.md, issue 16). In a process of its own the engine has
its GIL to itself; the server only passes requests in and updates out.

The worker is spawned (not forked: the server has threads) on first use, and again after it died, so a crash
costs the requests in flight an error message and nothing more. Requests, updates, explanations and errors cross
as pickles over one pipe; each request has a number, and its updates go to its own inbox in this process.
`cancel`, closing the stream and the time limit behave as in process: the worker's own `Engine.stream` does the
stopping and keeps the time limit, this side only forwards Stop, and tells the requests in flight when the worker
dies.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..presets import PRESETS, Preset, get_preset
from ..requests import GenerationParams, StreamUpdate
from .engine import Engine, check_request

logger = logging.getLogger(__name__)

CANCEL_POLL_S = 0.01  # how often a waiting stream looks at its `cancel` event: Stop reaches the worker this soon
START_TIMEOUT_S = 120.0  # for the worker to import torch and build its engine


@dataclass(frozen=True)
class LoadedModel:
    """What `EngineProcess.load` returns in place of the model adapter, which stays in the worker: the facts about
    a loaded model that the app reads."""

    name: str
    max_audio_seconds: float | None


class WorkerDiedError(RuntimeError):
    """The engine's worker process ended while a request was in flight; the next request starts a new one."""


class EngineProcess:
    """`Engine(**engine_kwargs)` run in a spawned worker process; `stream`, `explain`, `load`, `preset` and
    `check` as `Engine`'s, with requests checked here before anything is sent. The worker starts at once in the
    background unless not `start_now`, and otherwise on first use."""

    def __init__(self, presets: Mapping[str, Preset] | None = None, timeout_s: float = 120.0, batching: bool = True,
                 start_now: bool = True, **engine_kwargs):
        self.presets = dict(PRESETS if presets is None else presets)
        self.timeout_s = timeout_s
        self.batching = batching
        self._engine_kwargs = dict(presets=self.presets, timeout_s=timeout_s, batching=batching, **engine_kwargs)
        Engine(**{**self._engine_kwargs, "threads": None})  # the same argument checks, here, before any spawn
        self._lock = threading.Lock()  # the worker's life: start, restart, stop
        self._send_lock = threading.Lock()
        self._numbers = itertools.count()
        self._inboxes: dict[int, tuple[int, queue.Queue]] = {}  # request number -> (its worker's generation, inbox)
        self._process = self._connection = None
        self._generation = 0  # how many workers have been started: a dead one's receiver must not touch the next
        if start_now:  # in the background, so that the first request does not wait for torch to import
            threading.Thread(target=self._start_quietly, name="mmgpt-engine-start", daemon=True).start()

    # --- the Engine methods the app calls -----------------------------------------------------------------------

    def preset(self, name: str) -> Preset:
        return get_preset(name, self.presets)

    def check(self, preset_name: str, request) -> Preset:
        return check_request(self.preset(preset_name), preset_name, request)

    def stream(self, preset_name: str, request, params: GenerationParams | None = None,
               cancel: threading.Event | None = None) -> Iterator[StreamUpdate]:
        """As `Engine.stream`: raises at once for an unknown preset or a request it cannot serve."""
        self.check(preset_name, request)
        return self._stream(preset_name, request, params, cancel)

    def explain(self, preset_name: str, request, generated, params: GenerationParams | None = None):
        self.check(preset_name, request)
        return self._call("explain", preset_name, request, generated, params)

    def load(self, preset_name: str) -> LoadedModel | None:
        """Load `preset_name` in the worker (PresetUnavailableError if it can't); None for a remote preset."""
        self.preset(preset_name)
        return self._call("load", preset_name)

    def close(self):
        """Stop the worker (it also ends with this process)."""
        with self._lock:
            if self._process is not None and self._process.is_alive():
                self._send(None)
                self._process.join(timeout=5)
                if self._process.is_alive():
                    self._process.kill()
            self._process = None

    # --- requests to the worker ----------------------------------------------------------------------------------

    def _stream(self, preset_name, request, params, cancel) -> Iterator[StreamUpdate]:
        number, inbox = self._open("stream", preset_name, request, params)
        finished = cancel_sent = False
        try:
            while True:
                kind, payload = self._next(inbox, poll=True)
                if kind is None:  # nothing yet: forward Stop once
                    if cancel is not None and cancel.is_set() and not cancel_sent:
                        self._send(("cancel", number))
                        cancel_sent = True
                    continue
                if kind == "update":
                    yield payload
                elif kind == "end":
                    finished = True
                    return
                else:
                    finished = True
                    raise payload
        finally:
            self._inboxes.pop(number, None)
            if not finished:  # left early (a closed tab): the worker's stream stops within one decoding step
                self._send(("cancel", number), quiet=True)

    def _call(self, kind: str, *args):
        number, inbox = self._open(kind, *args)
        try:
            while True:
                answer, payload = self._next(inbox, poll=False)
                if answer == "result":
                    return payload
                if answer == "error":
                    raise payload
        finally:
            self._inboxes.pop(number, None)

    def _open(self, kind: str, *args) -> tuple[int, queue.Queue]:
        self._ensure_worker()
        number, inbox = next(self._numbers), queue.Queue()
        self._inboxes[number] = (self._generation, inbox)
        self._send((kind, number, *args))
        return number, inbox

    @staticmethod
    def _next(inbox: queue.Queue, poll: bool):
        """The next (kind, payload) from the worker for this request; (None, None) after CANCEL_POLL_S if `poll`."""
        try:
            return inbox.get(timeout=CANCEL_POLL_S if poll else None)
        except queue.Empty:
            return None, None

    def _send(self, message, quiet: bool = False):
        try:
            with self._send_lock:
                self._connection.send(message)
        except (OSError, AttributeError, ValueError):  # the worker is gone; its receiver tells the requests
            if not quiet:
                raise WorkerDiedError("The model worker stopped; please try again.") from None

    # --- the worker's life ---------------------------------------------------------------------------------------

    def _ensure_worker(self):
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            context = multiprocessing.get_context("spawn")
            ours, theirs = context.Pipe()
            process = context.Process(target=serve, args=(theirs, self._engine_kwargs, logging.getLogger().level),
                                      name="mmgpt-engine", daemon=True)
            process.start()
            theirs.close()
            if not ours.poll(START_TIMEOUT_S) or ours.recv() != "ready":
                process.kill()
                raise WorkerDiedError("The model worker did not start; see the server's log.")
            self._generation += 1
            self._process, self._connection = process, ours
            threading.Thread(target=self._receive, args=(ours, process, self._generation), daemon=True,
                             name="mmgpt-engine-receiver").start()
            logger.info("engine worker started (pid %d)", process.pid)

    def _start_quietly(self):
        try:
            self._ensure_worker()
        except WorkerDiedError as exc:  # the first request tries again, and reports it
            logger.error("%s", exc)

    def _receive(self, connection, process, generation: int):
        """Deliver the worker's messages to their requests' inboxes; when it dies, tell every request in flight."""
        while True:
            try:
                number, kind, payload = connection.recv()
            except (EOFError, OSError):
                break
            _, inbox = self._inboxes.get(number, (None, None))
            if inbox is not None:  # else the request was left early: the worker's last words for it go nowhere
                inbox.put((kind, payload))
        process.join(timeout=5)
        if process.exitcode:  # 0: told to stop
            logger.error("the engine worker (pid %d) ended with exit code %s", process.pid, process.exitcode)
        for started_by, inbox in list(self._inboxes.values()):
            if started_by == generation:
                inbox.put(("error", WorkerDiedError("The model worker stopped; please try again.")))


# --- in the worker ---------------------------------------------------------------------------------------------------


def serve(connection, engine_kwargs: dict, log_level: int):
    """The worker's main loop: build the engine, then run each request in a thread of its own until told to stop
    (None) or the server's end of the pipe closes."""
    logging.basicConfig(level=log_level or logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s [engine worker]: %(message)s")
    engine = Engine(**engine_kwargs)
    send_lock = threading.Lock()
    cancels: dict[int, threading.Event] = {}

    def send(number: int, kind: str, payload=None):
        with send_lock:
            connection.send((number, kind, payload))

    def run(number: int, kind: str, args: tuple):
        try:
            if kind == "stream":
                for update in engine.stream(*args, cancels[number]):
                    send(number, "update", update)
                send(number, "end")
            elif kind == "explain":
                send(number, "result", engine.explain(*args))
            else:  # load
                adapter = engine.load(args[0])
                send(number, "result", adapter and LoadedModel(args[0], adapter.max_audio_seconds))
        except BaseException as exc:  # noqa: BLE001 - every error belongs to its request, in the server's process
            send(number, "error", portable(exc))
        finally:
            cancels.pop(number, None)

    connection.send("ready")
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            break
        if message is None:
            break
        kind, number, *args = message
        if kind == "cancel":
            if number in cancels:
                cancels[number].set()
            continue
        cancels[number] = threading.Event()
        threading.Thread(target=run, args=(number, kind, tuple(args)), daemon=True,
                         name=f"mmgpt-engine-request-{number}").start()


def portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling as itself (type and message), else a RuntimeError with its type and message."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
        if type(copy) is type(exc) and str(copy) == str(exc):
            return exc
    except Exception:  # noqa: BLE001 - whatever made it unpicklable
        pass
    return RuntimeError(f"{type(exc).__name__}: {exc}")

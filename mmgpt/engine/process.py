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
import os
import pickle
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..presets import PRESETS, Preset, get_preset
from ..requests import GenerationParams, StreamUpdate
from ..loaders import PresetUnavailableError
from .engine import Engine, GenerationTimeout, check_request

logger = logging.getLogger(__name__)

CANCEL_POLL_S = 0.01  # how often a waiting stream looks at its `cancel` event: Stop reaches the worker this soon
START_TIMEOUT_S = 120.0  # for the worker to import torch and build its engine
STOP_WAIT_S = 5.0  # for a stopping worker's answers to end (one decoding step each) and say so


@dataclass(frozen=True)
class LoadedModel:
    """What `EngineProcess.load` returns in place of the model adapter, which stays in the worker: the facts about
    a loaded model that the app reads."""

    name: str
    max_audio_seconds: float | None
    writes_heard_questions: bool = False  # see `MMGPTAdapter.writes_heard_questions`


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
        self._numbers = itertools.count()
        self._worker: _Worker | None = None
        self._closed = False
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
        """Stop the worker, and start no other (it also ends with this process). Answers in flight end as Stop
        ends them; any request after this gets WorkerDiedError."""
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()

    # --- requests to the worker ----------------------------------------------------------------------------------

    def _stream(self, preset_name, request, params, cancel) -> Iterator[StreamUpdate]:
        worker, number, inbox = self._open("stream", preset_name, request, params)
        finished = cancel_sent = False
        try:
            while True:
                if cancel is not None and cancel.is_set() and not cancel_sent:  # Stop: forwarded once, at once
                    worker.send(("cancel", number), quiet=True)
                    cancel_sent = True
                try:  # with a `cancel` to watch, wake up now and then to look at it
                    kind, payload = inbox.get(timeout=CANCEL_POLL_S if cancel is not None else None)
                except queue.Empty:
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
            worker.inboxes.pop(number, None)
            if not finished:  # left early (a closed tab): the worker's stream stops within one decoding step
                worker.send(("cancel", number), quiet=True)

    def _call(self, kind: str, *args):
        worker, number, inbox = self._open(kind, *args)
        try:
            answer, payload = inbox.get()
            if answer == "error":
                raise payload
            return payload
        finally:
            worker.inboxes.pop(number, None)

    def _open(self, kind: str, *args) -> tuple[_Worker, int, queue.Queue]:
        """Send a request to the worker (started if need be); the worker, the request's number and its inbox."""
        worker = self._running_worker()
        number, inbox = next(self._numbers), queue.Queue()
        worker.inboxes[number] = inbox
        try:
            worker.send((kind, number, *args))
        except BaseException:
            worker.inboxes.pop(number, None)
            raise
        return worker, number, inbox

    # --- the worker's life ---------------------------------------------------------------------------------------

    def _running_worker(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise WorkerDiedError("The model worker was shut down.")
            if self._worker is None or self._worker.dead.is_set():
                if self._worker is not None:
                    self._worker.stop()  # a worker whose pipe closed but whose process lingers
                self._worker = _Worker.start(self._engine_kwargs)
            return self._worker

    def _start_quietly(self):
        try:
            self._running_worker()
        except WorkerDiedError as exc:  # the first request tries again, and reports it
            logger.error("%s", exc)


class _Worker:
    """One worker process: its pipe, the inboxes of the requests sent to it, and the thread that fills them."""

    def __init__(self, process, connection):
        self.process, self.connection = process, connection
        self.inboxes: dict[int, queue.Queue] = {}  # request number -> its inbox
        self.dead = threading.Event()  # its pipe closed: no more answers will come
        self.send_lock = threading.Lock()
        # The receiver is the only thread that joins the process: two threads joining one child race to reap it,
        # and the loser sees it alive for a moment after it has exited.
        self.receiver = threading.Thread(target=self._receive, daemon=True, name="mmgpt-engine-receiver")
        self.receiver.start()

    @classmethod
    def start(cls, engine_kwargs: dict) -> _Worker:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=serve, args=(theirs, engine_kwargs, logging.getLogger().level),
                                  name="mmgpt-engine", daemon=True)
        process.start()
        theirs.close()
        try:
            ready = ours.poll(START_TIMEOUT_S) and ours.recv() == "ready"
        except (EOFError, OSError):  # it died while starting
            ready = False
        if not ready:
            process.kill()
            process.join(timeout=5)
            ours.close()
            raise WorkerDiedError("The model worker did not start; see the server's log.")
        logger.info("engine worker started (pid %d)", process.pid)
        return cls(process, ours)

    def send(self, message, quiet: bool = False):
        """Send `message`; WorkerDiedError if the worker is gone (nothing, if `quiet`: its receiver tells the
        requests)."""
        try:
            with self.send_lock:
                self.connection.send(message)
        except OSError:
            if not quiet:
                raise WorkerDiedError("The model worker stopped; please try again.") from None

    def stop(self):
        """Tell the worker to stop and wait until its receiver has seen it exit; kill it if it does not."""
        self.send(None, quiet=True)
        self.receiver.join(timeout=STOP_WAIT_S + 5)
        if self.receiver.is_alive():  # the pipe is still open: the worker is stuck
            self.process.kill()
            self.receiver.join(timeout=10)
        elif self.process.exitcode is None:  # its pipe closed, its process lingers (the receiver gave up joining)
            self.process.kill()
            self.process.join(timeout=5)
        self.connection.close()

    def _receive(self):
        """Deliver the worker's messages to their requests' inboxes; when it dies, tell every request in flight."""
        while True:
            try:
                number, kind, payload = self.connection.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a message that cannot be read: the pipe can no longer be trusted
                logger.exception("unreadable message from the engine worker; stopping it")
                self.process.kill()
                break
            inbox = self.inboxes.get(number)
            if inbox is not None:  # else the request was left early: the worker's last words for it go nowhere
                inbox.put((kind, payload))
        self.dead.set()
        self.process.join(timeout=5)
        if self.process.exitcode:  # 0: told to stop
            logger.error("the engine worker (pid %d) ended with exit code %s", self.process.pid,
                         self.process.exitcode)
        for inbox in list(self.inboxes.values()):
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
        try:
            with send_lock:
                connection.send((number, kind, payload))
        except OSError:  # the server's end is closed: nobody is listening any more
            if (cancel := cancels.get(number)) is not None:
                cancel.set()

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
                send(number, "result", adapter and LoadedModel(args[0], adapter.max_audio_seconds,
                                                                   getattr(adapter, "writes_heard_questions", False)))
        except BaseException as exc:  # noqa: BLE001 - every error belongs to its request, in the server's process
            send(number, "error", portable(exc))
        finally:
            cancels.pop(number, None)

    connection.send("ready")
    threads: list[threading.Thread] = []
    try:
        listen(connection, cancels, run, threads)
    finally:  # told to stop, or the server is gone: end every answer as Stop does, and send its end
        for cancel in list(cancels.values()):
            cancel.set()
        for thread in threads:
            thread.join(timeout=STOP_WAIT_S)
        # Every answer has ended and said so (or had STOP_WAIT_S): exit now, without waiting for the threads of
        # loaded models, which a normal interpreter exit would join
        connection.close()
        logging.shutdown()
        os._exit(0)


def listen(connection, cancels: dict[int, threading.Event], run, threads: list[threading.Thread]):
    """Start a thread running each request the server sends; set its event on ("cancel", number)."""
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
        threads[:] = [thread for thread in threads if thread.is_alive()]
        threads.append(threading.Thread(target=run, args=(number, kind, tuple(args)), daemon=True,
                                        name=f"mmgpt-engine-request-{number}"))
        threads[-1].start()


def portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling as itself (type and message); else the nearest type the app words for users
    (`user_facing_errors`), with the same message."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
        if type(copy) is type(exc) and str(copy) == str(exc):
            return exc
    except Exception:  # noqa: BLE001 - whatever made it unpicklable
        pass
    for kind in (GenerationTimeout, PresetUnavailableError, ValueError):
        if isinstance(exc, kind):
            return kind(str(exc))
    return RuntimeError(f"{type(exc).__name__}: {exc}")

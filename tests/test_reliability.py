"""Issue 7, items 2 to 4: cancel storms, concurrent load and a soak, through the app as API users drive it.

The scenarios live in `benchmarks/stress.py`, which runs them at full size (200 cancels each way, 64 clients, 1,000
requests) and records the figures; here they run small enough to finish in about a minute. Everything runs on
small random checkpoints the tests write themselves, so none of it depends on the trained model.
"""

import functools
import os
import threading
import time
from pathlib import Path

import pytest

import app
from benchmarks import stress

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")

CANCEL_CYCLES = 50  # each way; benchmarks/stress.py runs 200
CLIENTS = 16
SMALL_QUEUE, CONCURRENCY = 4, 2  # 16 clients at once overflow a queue of 4 behind 2 running requests
SOAK_REQUESTS = 60  # 15 of each kind of request; benchmarks/stress.py runs 1,000 (the suite has a time budget)
CACHE_SWEEP = (1, 2)  # seconds: sweep every second, delete files older than 2 s (the app's default is 600, 1800)
THREAD_SLACK = 2  # threads; Python's and anyio's pools may keep an idle worker or two
CANCEL_RSS_SLACK_MB = 30
SOAK_RSS_GROWTH_MB = 50
BUSY_ANSWER_S = 2.0  # "at once": a full queue answers in milliseconds (benchmarks/stress.py); this allows a busy CPU


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("client-files")


# --- cancel -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["client", "connection"], ids=["job.cancel()", "dropped connection"])
def test_cancel_storm_leaves_no_threads_or_memory_behind(stress_app, via):
    figures = stress.cancel_storm(stress_app, CANCEL_CYCLES, via)
    assert figures["not_stopped"] == 0 and figures["worker_threads_after"] == 0, figures
    assert figures["anomaly_count"] == 0, figures  # every generation was streaming when it was cancelled
    assert figures["threads_after"] <= figures["threads_before"] + THREAD_SLACK, figures
    assert figures["rss_growth_mb"] < CANCEL_RSS_SLACK_MB, figures
    assert figures["stop_s_max"] < 2.0, figures  # every worker was gone within 2 s of its cancel


def test_a_cancelled_generation_runs_no_further_decoding_step(stress_app, stress_engine):
    """After job.cancel() returns, the model is not called again (the engine test counts steps exactly)."""
    model = stress_engine.load(stress.MMGPT_PRESET).model
    calls = {"n": 0}
    original, patched_before = model.forward, "forward" in vars(model)

    @functools.wraps(original)
    def counting_forward(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    model.forward = counting_forward
    try:
        client = stress_app.client()
        job = client.submit(**stress.text_args(max_new_tokens=stress.LONG_TOKENS), api_name="/generate")
        assert stress.wait_for(lambda: calls["n"] >= 20, 30) is not None, "the generation never got going"
        job.cancel()
        assert stress.wait_for(lambda: not stress.worker_threads(), 2.0) is not None
        at_stop = calls["n"]
        time.sleep(0.3)
        assert calls["n"] == at_stop < stress.LONG_TOKENS
    finally:
        if patched_before:
            model.forward = original
        else:
            del model.forward  # back to the class's method


# --- load -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_queue(stress_presets, stress_engine):
    with stress.serve(stress_presets, stress_engine, queue_size=SMALL_QUEUE, concurrency=CONCURRENCY) as served:
        yield served


def test_sixteen_clients_at_once_each_complete_or_hear_busy(small_queue, workdir):
    figures = stress.load(small_queue, CLIENTS, rounds=1, workdir=workdir)
    assert figures["errors"] == [] and figures["hung_threads"] == 0, figures
    assert set(figures["outcomes"]) <= {"completed", "busy"}, figures
    assert figures["outcomes"].get("completed", 0) >= CONCURRENCY, figures
    assert figures["outcomes"].get("busy", 0) >= 1, figures  # the small queue overflowed
    assert figures["slowest_s"] < stress.REQUEST_TIMEOUT_S, figures


def test_a_full_queue_says_busy_at_once(small_queue):
    figures = stress.busy_answer(small_queue, CONCURRENCY, SMALL_QUEUE)
    assert set(figures["http_statuses"]) == {503}, figures
    assert figures["client_errors"] == ["Queue is full! Please try again."], figures
    assert figures["http_answer_s_max"] < BUSY_ANSWER_S and figures["client_answer_s_max"] < BUSY_ANSWER_S, figures
    assert stress.wait_for(lambda: not stress.worker_threads(), 5.0) is not None


# --- soak -------------------------------------------------------------------------------------------------------


def test_soak_of_mixed_requests_keeps_memory_files_and_loads_bounded(stress_presets, stress_engine, workdir):
    with stress.serve(stress_presets, stress_engine, cache_sweep=CACHE_SWEEP) as served:
        figures = stress.soak(served, SOAK_REQUESTS, workdir)
    assert figures["rss_growth_mb"] < SOAK_RSS_GROWTH_MB, figures
    assert figures["cached_files_after_sweep"] == 0, figures  # every upload and output was swept
    assert figures["cached_files_peak"] < SOAK_REQUESTS, figures  # ... and they never piled up meanwhile
    assert figures["load_count"] == {stress.MMGPT_PRESET: 1, stress.GPT2_PRESET: 1}, figures
    assert figures["worker_threads_after"] == 0 and threading.active_count() < 100, figures


class GrowsWhileSwept(set):
    """A set of cached files to which an upload is added while the sweeper walks it, as happens under load."""

    grown = False

    def __iter__(self):
        for item in set.__iter__(self):
            if not self.grown:
                self.grown = True
                self.add("/nonexistent/uploaded-during-the-sweep")
            yield item


def test_the_cache_sweeper_survives_uploads_arriving_mid_sweep(stress_presets, stress_engine):
    """Gradio 6.31's sweeper dies on "Set changed size during iteration"; the app's wrapper sweeps again."""
    from gradio.utils import get_upload_folder

    with stress.serve(stress_presets, stress_engine, cache_sweep=(1, 1)) as served:
        served.demo.temp_file_sets.insert(0, GrowsWhileSwept({"/nonexistent/cached-before-the-sweep"}))
        old = Path(get_upload_folder()) / f"sweep-probe-{os.getpid()}.txt"
        old.parent.mkdir(parents=True, exist_ok=True)
        old.write_text("an upload")
        served.demo.upload_file_set.add(str(old))
        assert stress.wait_for(lambda: not old.exists(), 6.0, 0.1) is not None, "the sweeper stopped sweeping"


def test_gradio_keeps_state_for_a_bounded_number_of_sessions(stress_presets, stress_engine):
    """Gradio keeps about 0.13 MB per browser session; the app caps how many (benchmarks/stress.py shows the
    memory plateau at full size)."""
    assert app.launch_kwargs()["state_session_capacity"] == app.SESSION_CAPACITY <= 1000
    with stress.serve(stress_presets, stress_engine, session_capacity=20) as served:
        figures = stress.sessions(served, 60, warmup=0)
    assert figures["sessions_kept"] == 20, figures

"""`python -m benchmarks --smoke` runs every benchmark at its smallest size and writes every figure.

Benchmarks are not tests: this checks that each figure is there and is a finite number, never what it is.
"""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABS = ("caption", "transcribe", "generate")
SIZES = ("mmgpt_tiny", "gpt2_small")
FIGURES = {
    "streaming": ["tokens_per_s_ratio", "stream_tokens_per_s", "generate_tokens_per_s"],
    "app_http": [f"{tab}_{figure}" for tab in TABS for figure in (
        "http_added_ttft_p50_ms", "tokens_per_s_ratio", "arrival_tokens_per_s_ratio", "ttft_p50_ms_http",
        "ttft_p95_ms_http", "ttft_p50_ms_in_process", "ttft_p95_ms_in_process", "gradio_client_http_added_ttft_p50_ms",
        "gradio_client_tokens_per_s_ratio")],
    "decoder": [f"{size}_{figure}" for size in SIZES for figure in (
        "decode_ratio", "train_step_ratio", "decode_tokens_per_s_mmgpt", "decode_tokens_per_s_gpt2",
        "train_step_ms_mmgpt", "train_step_ms_gpt2")],
    "memory_ceiling": ["gpt2_decode_fraction_of_ceiling", "mmgpt_at_gpt2_small_decode_fraction_of_ceiling",
                       "memory_bandwidth_gb_per_s", "ceiling_tokens_per_s"],
    "audio": ["long_flac_load_resample_s", "long_log_mel_s", "long_total_x_real_time", "long_wav_load_resample_s",
              "speech_real_time_factor"],
    "startup": ["cold_start_http_200_s", "cold_start_first_token_s", "rss_idle_mib", "rss_mmgpt_tiny_loaded_mib",
                "rss_growth_per_session_mib"],
    "explain_overhead": [f"{tab}_{figure}" for tab in TABS for figure in ("tokens_per_s_ratio", "explain_ms")],
    "concurrency": [f"{path}_{figure}" for path in ("engine", "engine_alone", "http", "http_alone") for figure in (
        "4_clients_ratio", "8_clients_ratio", "16_clients_ratio", "8_clients_ttft_p95_ratio", "1_client_tokens_per_s",
        "4_clients_tokens_per_s", "8_clients_tokens_per_s", "16_clients_tokens_per_s", "1_client_ttft_p95_ms",
        "8_clients_ttft_p95_ms")] + [f"{path}_{n}_vs_before_batching" for path in ("engine", "http")
                                     for n in ("1_client", "4_clients", "8_clients", "16_clients")]
                   + [f"{path}_same_answers_as_alone" for path in ("engine", "http", "http_alone")]
                   + [f"engine_{n}_{figure}" for n in ("1_client", "8_clients")
                      for figure in ("tokens_per_s_at_2_threads", "1_thread_vs_2")],
    "speech": ["cpu_ratio_app_over_faster_whisper_1_thread"] + [f"{path}_{figure}" for path in (
        "app", "faster_whisper") for figure in ("cpu_s_per_audio_s", "ttft_s", "peak_rss_mib", "load_s", "wer")],
    "remote": ["remote_tokens_per_s", "remote_ttft_ms", "in_process_tokens_per_s", "in_process_ttft_ms",
               "remote_to_in_process_tokens_per_s_ratio", "continuous_batching_8_clients_tokens_per_s",
               "continuous_batching_1_client_tokens_per_s", "continuous_batching_8_clients_ratio", "serve_startup_s"],
}


# The smoke run starts three app servers and a model server: 2.6 minutes of a 2-core CI machine, which took the whole
# suite past its 12-minute budget. It runs where asked: MMGPT_BENCHMARK_SMOKE=1 bash scripts/test.sh -k benchmarks
SMOKE = os.environ.get("MMGPT_BENCHMARK_SMOKE") == "1"


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> dict:
    if not SMOKE:
        pytest.skip("the benchmarks' smoke run is opt-in: MMGPT_BENCHMARK_SMOKE=1")
    out = tmp_path_factory.mktemp("benchmarks") / "results.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    # A session of its own, so that a run past the timeout goes down with the app servers it started
    run = subprocess.Popen([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = run.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        raise
    assert run.returncode == 0, stdout[-4000:] + stderr[-4000:]
    return json.loads(out.read_text())


def numbers(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)


def test_smoke_run_reports_every_figure(smoke_report):
    benchmarks = smoke_report["benchmarks"]
    assert set(benchmarks) == set(FIGURES)
    for name, figures in FIGURES.items():
        assert "error" not in benchmarks[name], benchmarks[name].get("error")
        reported = benchmarks[name]["figures"]
        assert set(figures) <= set(reported), f"{name} lacks {sorted(set(figures) - set(reported))}"
        for figure in figures:
            value = reported[figure]["value"]
            assert isinstance(value, (int, float)) and math.isfinite(value), (name, figure, value)


def test_every_number_in_the_report_is_finite(smoke_report):
    bad = [n for n in numbers(smoke_report) if not math.isfinite(n)]
    assert not bad


def test_the_report_says_what_was_measured(smoke_report):
    meta = smoke_report["meta"]
    assert meta["smoke"] is True
    assert meta["model"]["weights"] == "random"
    assert {"cpu_count", "torch_threads", "torch"} <= set(meta["machine"])
    for name, figures in FIGURES.items():
        for figure in smoke_report["benchmarks"][name]["figures"].values():
            assert set(figure) == {"value", "unit", "target", "met", "note"}


def test_a_partial_run_replaces_its_own_entries_and_keeps_the_others():
    from benchmarks.__main__ import merged

    earlier = {"meta": {"started_utc": "full run"},
               "benchmarks": {"streaming": {"figures": {"x": 1}}, "audio": {"figures": {"y": 2}}}}
    partial = {"meta": {"started_utc": "partial run"},
               "benchmarks": {"streaming": {"figures": {"x": 3}}, "remote": {"figures": {"z": 4}}}}
    report = merged(earlier, partial, "python -m benchmarks --only streaming --only remote")
    assert report["meta"] == earlier["meta"]
    assert list(report["benchmarks"]) == ["streaming", "audio", "remote"]  # the issues' order
    assert report["benchmarks"]["audio"] == {"figures": {"y": 2}}
    assert report["benchmarks"]["streaming"]["figures"] == {"x": 3}
    assert report["benchmarks"]["streaming"]["run"] == {"command": "python -m benchmarks --only streaming --only remote",
                                                         "started_utc": "partial run"}


def test_the_recorded_results_hold_every_benchmark():
    recorded = json.loads((ROOT / "benchmarks" / "results.json").read_text())["benchmarks"]
    assert set(recorded) == set(FIGURES)
    assert not [name for name, result in recorded.items() if "error" in result or not result["figures"]]

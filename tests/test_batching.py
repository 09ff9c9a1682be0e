"""Requests that run at the same moment share decoding steps, and each keeps its own stream, Stop, timeout,
settings, seed and errors (the engine contract under batching; `mmgpt/engine/batching.py`).

The models are tiny random checkpoints written here: a never-ending mmgpt that takes pictures, recordings and text
(`benchmarks.stress`), and the test GPT-2 of `test_engine.py`. "Alone" means `model.generate()` called directly.
"""

import functools
import threading
import time

import numpy as np
import pytest
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from benchmarks import stress
from mmgpt.engine import (
    AudioRequest,
    Engine,
    GenerationParams,
    GenerationTimeout,
    ImageRequest,
    TextRequest,
    generation_kwargs,
)
from mmgpt.engine.batching import can_batch
from mmgpt.engine.segments import fit_to_context
from test_engine import save_tiny_gpt2, tiny_presets

MMGPT = "mmgpt-random"
GREEDY = GenerationParams(max_new_tokens=24)
STEP_DELAY_S = 0.004  # per forward call: wide enough for every request of a test to join the same batch
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    directory = tmp_path_factory.mktemp("batching")
    mmgpt = stress.never_ending_mmgpt_preset(MMGPT, directory / "mmgpt", {"max_new_tokens": 24}, n_embd=64,
                                             n_layer=2)
    return {MMGPT: mmgpt, **tiny_presets(save_tiny_gpt2(directory / "gpt2"), "gpt2")}


@pytest.fixture
def engine(presets):
    return Engine(device="cpu", timeout_s=TIMEOUT_S, presets=presets, update_interval_s=0)


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))


def recording(seed: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    return (0.3 * np.sin(2 * np.pi * (150 + 20 * seed) * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)


MIXED = [  # every kind of request mmgpt takes, with prompts of different lengths (so rows are padded)
    ImageRequest(picture(0)),
    AudioRequest(recording(1)),
    TextRequest("ROMEO:"),
    ImageRequest(picture(2), "a small"),
    TextRequest("JULIET: O Romeo, Romeo! wherefore art thou Romeo?"),
    AudioRequest(recording(3, seconds=0.6)),
]


def alone(engine, preset: str, request, params: GenerationParams = GREEDY) -> tuple[int, ...]:
    """The token ids `model.generate()` writes for `request` when nothing else runs."""
    adapter = engine.load(preset)
    if isinstance(request, TextRequest):
        inputs, _ = fit_to_context(adapter, request, params.max_new_tokens)
    else:
        inputs = adapter.prepare(request)
    output = adapter.model.generate(**inputs, **generation_kwargs(params, adapter.room_for_new_tokens(inputs)),
                                    **adapter.extra_generate_kwargs(request))
    return tuple(output[0, inputs["input_ids"].shape[-1]:].tolist())


def watch_batches(model, delay_s: float = STEP_DELAY_S, fail=None, gather: int = 0) -> dict:
    """Record how many rows each decoding step of the batch thread carried; slow every forward a little; `fail`
    (kwargs -> bool) picks forward calls that raise. With `gather`, the first decoding step waits until that many
    prefills are done, so that every request joins the batch however slowly the machine runs."""
    original = model.forward
    seen = {"rows": [], "prefills": 0}

    @functools.wraps(original)
    def forward(*args, **kwargs):
        if fail is not None and fail(kwargs):
            raise RuntimeError("forward failed on purpose")
        if threading.current_thread().name.startswith("mmgpt-generate-batch"):
            if not seen["rows"]:
                stress.wait_for(lambda: seen["prefills"] >= gather, TIMEOUT_S, 0.001)
            seen["rows"].append(kwargs["input_ids"].shape[0])
        else:
            seen["prefills"] += 1
        time.sleep(delay_s)
        return original(*args, **kwargs)

    model.forward = forward
    return seen


def run_together(engine, jobs, cancels=None) -> dict:
    """Stream each `(preset, request, params)` of `jobs` in its own thread, all released at once; returns each
    one's updates or its exception by index. `cancels[i]` is the cancel event of job i, if any."""
    cancels = cancels or {}
    results = {}
    start = threading.Barrier(len(jobs))

    def run(index, preset, request, params):
        start.wait()
        try:
            results[index] = list(engine.stream(preset, request, params, cancels.get(index)))
        except Exception as exc:  # noqa: BLE001  (the test looks at it)
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    return results


def test_streams_from_a_batch_equal_the_same_requests_run_alone(engine):
    expected = [alone(engine, MMGPT, request) for request in MIXED]
    seen = watch_batches(engine.load(MMGPT).model, gather=len(MIXED))
    results = run_together(engine, [(MMGPT, request, GREEDY) for request in MIXED])
    assert max(seen["rows"]) == len(MIXED)  # image, audio and text rows decoded in the same steps
    for index, ids in enumerate(expected):
        updates = results[index]
        assert updates[-1].token_ids == ids, MIXED[index]
        assert updates[-1].text == engine.load(MMGPT).tokenizer.decode(list(ids), skip_special_tokens=True)
        texts = [u.text for u in updates]
        assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))  # its own stream


def test_each_request_keeps_its_own_settings_in_a_batch(engine):
    jobs = [
        (MMGPT, TextRequest("ROMEO:"), GenerationParams(max_new_tokens=5)),
        (MMGPT, TextRequest("ROMEO:"), GenerationParams(max_new_tokens=30, repetition_penalty=1.8)),
        (MMGPT, TextRequest("ROMEO:"), GenerationParams(max_new_tokens=17)),
        (MMGPT, ImageRequest(picture(4)), GenerationParams(max_new_tokens=9, repetition_penalty=1.3)),
    ]
    expected = [alone(engine, preset, request, params) for preset, request, params in jobs]
    seen = watch_batches(engine.load(MMGPT).model, gather=len(jobs))
    results = run_together(engine, jobs)
    assert max(seen["rows"]) == len(jobs)
    assert [results[i][-1].token_ids for i in range(len(jobs))] == expected
    assert [len(ids) for ids in expected] == [5, 30, 17, 9]


def test_one_requests_stop_leaves_the_others_text_unchanged(engine):
    long = GenerationParams(max_new_tokens=200)
    jobs = [(MMGPT, TextRequest("ROMEO:"), long), (MMGPT, ImageRequest(picture(5)), GREEDY),
            (MMGPT, TextRequest("But soft, what light"), GREEDY)]
    expected = [alone(engine, preset, request, params) for preset, request, params in jobs]
    seen = watch_batches(engine.load(MMGPT).model, gather=len(jobs))
    cancel = threading.Event()

    def stop_the_first_mid_batch():
        stress.wait_for(lambda: seen["rows"].count(3) >= 3, TIMEOUT_S, 0.001)
        cancel.set()

    threading.Thread(target=stop_the_first_mid_batch).start()
    results = run_together(engine, jobs, {0: cancel})
    assert max(seen["rows"]) == 3
    stopped = results[0][-1]
    assert stopped.done and 0 < stopped.tokens < 200
    assert stopped.token_ids == expected[0][: stopped.tokens]  # what it wrote before Stop is what it would have
    assert [results[i][-1].token_ids for i in (1, 2)] == expected[1:]


def test_a_request_that_joins_mid_batch_gets_the_right_answer(engine):
    first, second = TextRequest("ROMEO:"), AudioRequest(recording(6))
    long = GenerationParams(max_new_tokens=120)
    expected = alone(engine, MMGPT, first, long), alone(engine, MMGPT, second)
    seen = watch_batches(engine.load(MMGPT).model)
    results = {}

    def run_first():
        results["first"] = list(engine.stream(MMGPT, first, long))

    thread = threading.Thread(target=run_first)
    thread.start()
    assert stress.wait_for(lambda: len(seen["rows"]) >= 20, TIMEOUT_S) is not None  # well into its decoding
    results["second"] = list(engine.stream(MMGPT, second, GREEDY))
    thread.join(TIMEOUT_S)
    assert results["second"][-1].token_ids == expected[1]
    assert results["first"][-1].token_ids == expected[0]
    assert 2 in seen["rows"] and seen["rows"][0] == 1  # the second joined the first's running batch


def test_requests_to_a_text_model_batch_too_and_match_generate(engine):
    requests = [TextRequest("romeo but soft"), TextRequest("what light through yonder window breaks it is"),
                TextRequest("juliet")]
    expected = [alone(engine, "gpt2", request) for request in requests]
    seen = watch_batches(engine.load("gpt2").model, gather=len(requests))
    results = run_together(engine, [("gpt2", request, GREEDY) for request in requests])
    assert max(seen["rows"]) == len(requests)
    assert [results[i][-1].token_ids for i in range(len(requests))] == expected


class FailAfter(LogitsProcessor):
    """Raises on its `steps`-th call: an error in one row's own decoding work, in the shared batch thread."""

    def __init__(self, steps: int):
        self.steps = steps
        self.calls = 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls == self.steps:
            raise ValueError("this request's own logits processor failed")
        return scores


def test_an_error_in_one_request_reaches_that_request_only(engine, monkeypatch):
    adapter = engine.load(MMGPT)
    failing_prompt, failing_prefill = "FAIL IN DECODING", "FAIL IN PREFILL"
    prefill_ids = adapter.prepare(TextRequest(failing_prefill))["input_ids"]
    extra = adapter.extra_generate_kwargs

    def with_failing_processor(request):
        kwargs = extra(request)
        if isinstance(request, TextRequest) and request.prompt == failing_prompt:
            kwargs["logits_processor"] = LogitsProcessorList([FailAfter(steps=4)])
        return kwargs

    monkeypatch.setattr(adapter, "extra_generate_kwargs", with_failing_processor)
    jobs = [(MMGPT, TextRequest(failing_prompt), GREEDY), (MMGPT, ImageRequest(picture(7)), GREEDY),
            (MMGPT, TextRequest(failing_prefill), GREEDY), (MMGPT, TextRequest("ROMEO:"), GREEDY)]
    expected = {i: alone(engine, MMGPT, jobs[i][1]) for i in (1, 3)}

    def prefill_of_the_failing_request(kwargs):
        ids = kwargs["input_ids"]
        return ids.shape == prefill_ids.shape and bool((ids == prefill_ids).all())

    seen = watch_batches(adapter.model, fail=prefill_of_the_failing_request, gather=3)
    started = time.perf_counter()
    results = run_together(engine, jobs)
    assert time.perf_counter() - started < TIMEOUT_S / 2  # errors, not hangs until a timeout
    assert isinstance(results[0], ValueError) and "own logits processor failed" in str(results[0])
    assert isinstance(results[2], RuntimeError) and "forward failed on purpose" in str(results[2])
    assert {i: results[i][-1].token_ids for i in (1, 3)} == expected
    assert max(seen["rows"]) >= 3  # the failing decoder shared steps with the others


def test_a_failing_shared_step_reaches_every_request_in_it_and_the_next_ones_are_served(engine):
    calls = {"batch": 0}

    def third_shared_step(kwargs):
        if threading.current_thread().name.startswith("mmgpt-generate-batch"):
            calls["batch"] += 1
            return calls["batch"] == 3
        return False

    watch_batches(engine.load(MMGPT).model, fail=third_shared_step)
    results = run_together(engine, [(MMGPT, TextRequest("ROMEO:"), GREEDY), (MMGPT, TextRequest("JULIET:"), GREEDY)])
    assert all(isinstance(results[i], RuntimeError) for i in (0, 1)), results
    after = list(engine.stream(MMGPT, TextRequest("ROMEO:"), GREEDY))  # a fresh batch thread serves it
    assert after[-1].token_ids == alone(engine, MMGPT, TextRequest("ROMEO:"))


def test_each_request_keeps_its_own_timeout(presets):
    limit_s = 1.0
    engine = Engine(device="cpu", timeout_s=limit_s, presets=presets)
    watch_batches(engine.load(MMGPT).model, delay_s=0.01)
    ended, updates_at = {}, {"second": []}

    def run(name):
        started = time.perf_counter()
        try:
            for _ in engine.stream(MMGPT, TextRequest("ROMEO:"), GenerationParams(max_new_tokens=2000)):
                updates_at.get(name, []).append(time.perf_counter())
        except GenerationTimeout:
            ended[name] = (started, time.perf_counter())

    first = threading.Thread(target=run, args=("first",))
    first.start()
    time.sleep(limit_s / 2)
    run("second")  # joins the first's batch, half-way through the first's time
    first.join(TIMEOUT_S)
    for started, stopped in ended.values():
        assert limit_s <= stopped - started < limit_s + 1.0  # each stopped at its own limit
    assert ended["second"][1] - ended["first"][1] > limit_s / 4
    assert any(t > ended["first"][1] for t in updates_at["second"])  # and went on streaming after the first stopped


def sampled(engine, seed, prompt="ROMEO:", params=None) -> str:
    params = params or GenerationParams(max_new_tokens=20, temperature=1.0, top_k=50, seed=seed)
    return list(engine.stream(MMGPT, TextRequest(prompt), params))[-1].text


def test_a_seed_gives_the_same_text_in_a_batch_as_alone(engine, presets):
    unbatched = Engine(device="cpu", timeout_s=TIMEOUT_S, presets=presets, batching=False)
    expected = sampled(unbatched, seed=11)  # the path before batching: set_seed, then generate()
    assert sampled(engine, seed=11) == expected  # alone in the batch
    seen = watch_batches(engine.load(MMGPT).model, gather=4)
    params = GenerationParams(max_new_tokens=20, temperature=1.0, top_k=50)
    jobs = [(MMGPT, TextRequest("ROMEO:"), GenerationParams(max_new_tokens=20, temperature=1.0, top_k=50, seed=11)),
            (MMGPT, TextRequest("ROMEO:"), params), (MMGPT, TextRequest("JULIET:"), params),
            (MMGPT, TextRequest("ROMEO:"), GenerationParams(max_new_tokens=20, temperature=1.0, top_k=50, seed=11))]
    results = run_together(engine, jobs)
    assert max(seen["rows"]) == 4
    assert results[0][-1].text == results[3][-1].text == expected
    assert len({results[i][-1].text for i in (0, 1, 2)}) == 3  # unseeded rows draw their own randomness


def test_models_that_cannot_share_steps_are_told_apart(engine):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    assert can_batch(engine.load(MMGPT).model) and can_batch(engine.load("gpt2").model)
    whisper = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, max_source_positions=32,
        max_target_positions=32, num_mel_bins=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1))
    assert not can_batch(whisper)  # encoder-decoder: the engine runs it one request per thread
    beams = engine.load("gpt2").model
    beams.generation_config.num_beams = 3
    assert not can_batch(beams)  # beam search: generate() decodes it on its own


def test_batching_off_runs_every_request_on_its_own(presets):
    engine = Engine(device="cpu", timeout_s=TIMEOUT_S, presets=presets, batching=False)
    seen = watch_batches(engine.load(MMGPT).model, delay_s=0)
    results = run_together(engine, [(MMGPT, request, GREEDY) for request in MIXED[:3]])
    assert seen["rows"] == [] and all(results[i][-1].done for i in range(3))
    assert engine.decoding_batch(MMGPT, engine.load(MMGPT)) is None


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    yield
    assert stress.wait_for(lambda: not stress.worker_threads(), 5.0) is not None, stress.worker_threads()

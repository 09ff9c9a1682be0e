"""The engine contract, one test per point, on a tiny GPT-2 that the tests build and save themselves.

Loading goes through the same `load_adapter` path a Hub id takes, with a temporary directory as the source.
"""

import functools
import threading
import time

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from mmgpt import loaders
from mmgpt.engine import cache, segments, streaming
from mmgpt.engine import (
    Engine,
    GenerationParams,
    GenerationTimeout,
    HeardQuestionRequest,
    ImageRequest,
    PresetUnavailableError,
    TextRequest,
    UnknownPresetError,
)
from mmgpt.presets import Preset

hf_logging.disable_progress_bar()

# Every token is a plain word, so the streamer releases text at every step.
WORDS = (
    "romeo juliet but soft what light through yonder window breaks it is the east and sun arise fair kill "
    "envious moon who already sick pale with grief that thou her maid art far more than she"
).split()
PROMPT = TextRequest("romeo but soft")
LONG = 400  # new tokens that take far longer than any test waits


def save_tiny_gpt2(directory, seed: int = 0):
    """A 2-layer GPT-2 over a word-level vocabulary, with no end-of-text so it always runs to max_new_tokens."""
    vocab = {word: i for i, word in enumerate(["<|endoftext|>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=512,
                        bos_token_id=None, eos_token_id=None)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


def tiny_presets(directory, *names: str) -> dict[str, Preset]:
    return {name: Preset(name, ("text",), "causal-lm", str(directory), "tiny test GPT-2", 1) for name in names}


@pytest.fixture(params=[True, False], ids=["batched", "on its own"])
def engine(gpt2_dir, request):
    """Requests share decoding steps (the default), or each decodes on its own (models that cannot batch)."""
    return Engine(device="cpu", timeout_s=30, presets=tiny_presets(gpt2_dir, "tiny"), batching=request.param)


def spy_on_forward(model, delay_s: float = 0.0, fail_on_call: int | None = None):
    """Count the model's forward calls (and remember which threads made them); optionally slow or break one."""
    original = model.forward
    spy = {"calls": 0, "threads": set()}

    @functools.wraps(original)
    def forward(*args, **kwargs):
        spy["calls"] += 1
        spy["threads"].add(threading.current_thread())
        if spy["calls"] == fail_on_call:
            raise RuntimeError("forward failed on purpose")
        time.sleep(delay_s)
        return original(*args, **kwargs)

    model.forward = forward
    return spy


def final_update(updates):
    assert updates[-1].done and not any(u.done for u in updates[:-1])
    return updates[-1]


# --- loading ----------------------------------------------------------------------------------------------------


def test_loads_once_when_eight_threads_ask_at_once(engine, monkeypatch):
    real_load = cache.load_adapter

    def slow_load(*args):
        time.sleep(0.3)  # wide window for the other seven threads to pile in
        return real_load(*args)

    monkeypatch.setattr(cache, "load_adapter", slow_load)
    barrier = threading.Barrier(8)
    adapters = []

    def ask():
        barrier.wait()
        adapters.append(engine.load("tiny"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.load_count["tiny"] == 1
    assert len(adapters) == 8 and all(adapter is adapters[0] for adapter in adapters)


def test_a_slow_load_does_not_block_loading_another_preset(gpt2_dir, monkeypatch):
    engine = Engine(device="cpu", presets=tiny_presets(gpt2_dir, "slow", "fast"))
    real_load = cache.load_adapter
    release = threading.Event()

    def load(preset, *args):
        if preset.name == "slow":
            release.wait(10)
        return real_load(preset, *args)

    monkeypatch.setattr(cache, "load_adapter", load)
    slow = threading.Thread(target=engine.load, args=("slow",))
    slow.start()
    try:
        engine.load("fast")  # would deadlock on one global lock held during loads
        assert engine.loaded == ["fast"]
    finally:
        release.set()
        slow.join()
    assert engine.load_count == {"slow": 1, "fast": 1}


def test_least_recently_used_model_is_evicted(gpt2_dir):
    engine = Engine(max_loaded=2, device="cpu", presets=tiny_presets(gpt2_dir, "a", "b", "c"))
    engine.load("a")
    engine.load("b")
    engine.load("a")  # now b is the least recently used
    engine.load("c")
    assert engine.loaded == ["a", "c"]
    engine.load("b")
    assert engine.loaded == ["c", "b"]
    assert engine.load_count == {"a": 1, "b": 2, "c": 1}


def test_unknown_preset_raises_before_anything_loads(engine):
    with pytest.raises(UnknownPresetError, match='Unknown model "gpt-5".*tiny'):
        engine.stream("gpt-5", PROMPT, GenerationParams())
    with pytest.raises(UnknownPresetError):
        engine.load("gpt-5")
    assert engine.loaded == [] and not engine.load_count


def test_request_the_preset_cannot_serve_raises_before_anything_loads(engine):
    from PIL import Image

    with pytest.raises(ValueError, match='"tiny" does not take image input'):
        engine.stream("tiny", ImageRequest(Image.new("RGB", (8, 8))), GenerationParams())
    heard = HeardQuestionRequest(Image.new("RGB", (8, 8)), audio=np.zeros(160, np.float32))
    with pytest.raises(ValueError, match='"tiny" does not take image input'):  # a kind of question is one too
        engine.stream("tiny", heard, GenerationParams())
    with pytest.raises(ValueError, match='"tiny" cannot summarize'):
        engine.stream("tiny", TextRequest("some text", task="summarize"), GenerationParams())
    assert engine.loaded == []


def test_hub_preset_that_cannot_be_fetched_raises_preset_unavailable(monkeypatch):
    monkeypatch.setattr(loaders, "is_offline_mode", lambda: True)  # never touch the network, cached or not
    preset = Preset("whisper-base", ("audio",), "whisper", "mmgpt-tests/not-a-real-checkpoint", "offline", 290)
    engine = Engine(device="cpu", presets={"whisper-base": preset})
    with pytest.raises(PresetUnavailableError) as error:
        engine.load("whisper-base")
    assert str(error.value) == (
        'Model "whisper-base" could not be downloaded (no network access or not in the local cache). '
        "Choose mmgpt-tiny, which ships with the app."
    )
    assert not engine.load_count


def test_missing_local_checkpoint_raises_preset_unavailable():
    preset = Preset("mmgpt-tiny", ("text",), "mmgpt", "assets/no-such-checkpoint", "missing", 1)
    with pytest.raises(PresetUnavailableError, match='Model "mmgpt-tiny" is not installed'):
        Engine(device="cpu", presets={"mmgpt-tiny": preset}).load("mmgpt-tiny")


# --- streaming --------------------------------------------------------------------------------------------------


def test_updates_carry_text_so_far_ttft_and_tokens_per_s(engine):
    updates = list(engine.stream("tiny", PROMPT, GenerationParams(max_new_tokens=12)))
    assert len(updates) >= 3
    for before, after in zip(updates, updates[1:]):
        assert after.text.startswith(before.text) and after.tokens >= before.tokens
    last = final_update(updates)
    assert last.tokens == 12 and len(last.text.split()) == 12
    assert all(u.ttft_s is not None and 0 < u.ttft_s < 5 for u in updates)
    assert last.tokens_per_s is not None and last.tokens_per_s > 0
    assert (last.window, last.windows) == (0, 1)


def test_greedy_output_equals_model_generate(engine):
    params = GenerationParams(max_new_tokens=16)
    last = final_update(list(engine.stream("tiny", PROMPT, params)))
    adapter = engine.load("tiny")
    inputs = adapter.prepare(PROMPT)
    expected = adapter.model.generate(**inputs, max_new_tokens=16, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert last.tokens == len(expected)
    assert last.text == adapter.tokenizer.decode(expected, skip_special_tokens=True)


def save_char_gpt2(directory, seed: int = 0):
    """A tiny GPT-2 whose tokens are single letters joined without spaces: no word boundary ever comes."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {token: i for i, token in enumerate(["<|endoftext|>", "<unk>", *letters])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="<unk>")
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=None, eos_token_id=None)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def test_text_streams_token_by_token_even_without_word_boundaries(tmp_path):
    directory = save_char_gpt2(tmp_path)
    engine = Engine(device="cpu", timeout_s=30, presets=tiny_presets(directory, "letters"), update_interval_s=0)
    request = TextRequest("romeo")
    updates = list(engine.stream("letters", request, GenerationParams(max_new_tokens=16)))
    last = final_update(updates)
    assert " " not in last.text and len(last.text) == 16
    steps = [update.text for update in updates[:-1]]
    assert [len(text) for text in steps] == list(range(1, 17))  # one update per token, each one letter longer
    assert all(later.startswith(earlier) for earlier, later in zip(steps, steps[1:]))
    assert [update.tokens for update in updates[:-1]] == list(range(1, 17))
    adapter = engine.load("letters")
    inputs = adapter.prepare(request)
    expected = adapter.model.generate(**inputs, max_new_tokens=16, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert last.text == adapter.tokenizer.decode(expected, skip_special_tokens=True)


def test_the_streamer_holds_back_a_character_cut_across_tokens():
    from mmgpt.model.processing_mmgpt import train_tokenizer

    tokenizer = train_tokenizer(["plain ascii words only"], vocab_size=300)  # no merges across multi-byte chars
    text = "Ünïcode: 你好, 世界 😀 done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)  # several characters take several tokens
    streamer = streaming.TokenStreamer(tokenizer, timeout=1.0)
    streamer.put(torch.tensor([[0, 0]]))  # the prompt: skipped
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    chunks = [streamer.text_queue.get_nowait() for _ in range(streamer.text_queue.qsize())]
    texts = [chunk.text for chunk in chunks]
    assert not any("\ufffd" in t for t in texts), texts
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    assert texts[-1] == text and chunks[-1].tokens == len(ids)
    complete = [k for k in range(1, len(ids) + 1) if not tokenizer.decode(ids[:k]).endswith("\ufffd")]
    assert len(complete) < len(ids) and len(texts) - 1 == len(complete)  # a release per token that ends a character


def test_the_streamer_does_not_hold_back_invalid_bytes_for_ever():
    from mmgpt.model.processing_mmgpt import train_tokenizer

    tokenizer = train_tokenizer(["plain ascii words only"], vocab_size=300)
    stray = tokenizer("é", add_special_tokens=False)["input_ids"][-1]  # é's second byte: invalid on its own
    streamer = streaming.TokenStreamer(tokenizer, timeout=1.0)
    streamer.put(torch.tensor([[0]]))  # the prompt
    for _ in range(3 * streaming.HOLD_BACK_TOKENS):
        streamer.put(torch.tensor([stray]))
    assert streamer.text_queue.qsize() == 3  # released every HOLD_BACK_TOKENS tokens, not only at the end


def test_tokens_faster_than_the_update_interval_go_out_together(tmp_path):
    directory = save_char_gpt2(tmp_path)
    engine = Engine(device="cpu", timeout_s=30, presets=tiny_presets(directory, "letters"), update_interval_s=3600)
    updates = list(engine.stream("letters", TextRequest("romeo"), GenerationParams(max_new_tokens=16)))
    # the first token goes out at once (time to first token is not delayed); the rest wait for the window's end
    assert [(len(u.text), u.tokens, u.done) for u in updates] == [(1, 1, False), (16, 16, False), (16, 16, True)]


def test_many_open_streams_stretch_every_streams_update_interval(engine):
    pacing = streaming.UpdatePacing(0.02)
    for streams, interval in [(0, 0.02), (1, 0.02), (2, 0.02), (4, 0.04), (8, 0.08), (16, 0.16)]:
        pacing.streams = streams
        assert pacing.interval_s() == pytest.approx(interval)
    stream = engine.stream("tiny", PROMPT, GenerationParams(max_new_tokens=LONG))
    next(stream)
    assert engine.pacing.streams == 1
    stream.close()
    list(engine.stream("tiny", PROMPT, GenerationParams(max_new_tokens=4)))
    assert engine.pacing.streams == 0  # counted while open, however they end


def test_coalesced_releases_end_on_whole_characters(monkeypatch):
    from mmgpt.model.processing_mmgpt import train_tokenizer

    tokenizer = train_tokenizer(["plain ascii words only"], vocab_size=300)
    text = "Ünïcode: 你好, 世界 😀 done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    clock = iter(range(10_000))
    monkeypatch.setattr(streaming.time, "perf_counter", lambda: next(clock))  # one tick per token
    streamer = streaming.TokenStreamer(tokenizer, timeout=1.0, min_interval_s=4.5)  # a release every 5 ticks
    streamer.put(torch.tensor([[0, 0]]))  # the prompt
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    chunks = [streamer.text_queue.get_nowait() for _ in range(streamer.text_queue.qsize())]
    texts = [chunk.text for chunk in chunks]
    assert 2 < len(chunks) < len(ids) / 2
    assert not any("\ufffd" in t for t in texts), texts
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    assert texts[-1] == text
    # some releases stopped before a cut character that the tokens of their interval ended in
    assert any(chunk.text != tokenizer.decode(ids[: chunk.tokens]) for chunk in chunks)


def test_the_last_update_carries_the_answers_token_ids_and_explain_reads_them(engine):
    updates = list(engine.stream("tiny", PROMPT, GenerationParams(max_new_tokens=8)))
    last = final_update(updates)
    assert len(last.token_ids) == last.tokens == 8 and not any(u.token_ids for u in updates[:-1])
    tokenizer = engine.load("tiny").tokenizer
    assert tokenizer.decode(list(last.token_ids), skip_special_tokens=True) == last.text
    explanation = engine.explain("tiny", PROMPT, last.token_ids)
    special = set(tokenizer.all_special_ids)
    assert [t.token_id for t in explanation.tokens] == [i for i in last.token_ids if i not in special]


def test_max_new_tokens_is_capped_at_the_models_context(engine):
    last = final_update(list(engine.stream("tiny", PROMPT, GenerationParams(max_new_tokens=2048))))
    assert last.tokens == 512 - len(PROMPT.prompt.split())  # n_positions minus the prompt


def long_prompt(words: int) -> TextRequest:
    return TextRequest(" ".join(WORDS[i % len(WORDS)] for i in range(words)))


@pytest.mark.parametrize("max_new_tokens, kept", [(64, 512 - 64), (2048, 512 // 2)])
def test_a_prompt_longer_than_the_context_keeps_its_end_and_says_so(engine, max_new_tokens, kept):
    request = long_prompt(600)  # one token per word; the model reads 512 positions
    updates = list(engine.stream("tiny", request, GenerationParams(max_new_tokens=max_new_tokens)))
    last = final_update(updates)
    assert last.tokens == min(max_new_tokens, 512 - kept)
    (note,) = last.notes
    assert f"only the last {kept} of its 600 tokens were used" in str(note) and "512 tokens" in str(note)
    assert f"最后 {kept} 个" in note.text("zh-CN")  # the app shows it in the page's language
    assert all(update.notes == (note,) for update in updates)  # the first update already says it
    adapter = engine.load("tiny")
    inputs, _ = segments.fit_to_context(adapter, request, max_new_tokens)
    expected = adapter.tokenizer(request.prompt, return_tensors="pt")["input_ids"][0, -kept:]
    assert torch.equal(inputs["input_ids"][0], expected)


def test_a_prompt_that_fits_is_not_trimmed(engine):
    last = final_update(list(engine.stream("tiny", long_prompt(400), GenerationParams(max_new_tokens=100))))
    assert last.notes == () and last.tokens == 100


def sampled_text(engine, seed) -> str:
    params = GenerationParams(max_new_tokens=16, temperature=1.0, seed=seed)
    return final_update(list(engine.stream("tiny", PROMPT, params))).text


def test_a_fixed_seed_gives_the_same_sampled_text_twice(engine):
    first = sampled_text(engine, seed=1234)
    assert sampled_text(engine, seed=1234) == first
    assert sampled_text(engine, seed=4321) != first  # it really samples


def test_concurrent_sampling_does_not_disturb_a_seeded_request(engine):
    expected = sampled_text(engine, seed=7)
    results = {}

    def run(key, seed):
        results[key] = sampled_text(engine, seed)

    threads = [threading.Thread(target=run, args=(i, 7 if i % 2 else None)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in (1, 3, 5)] == [expected] * 3


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", 5, "temperature must be between 0 and 2, got 5"),
        ("top_p", 1.5, "top_p must be between 0 and 1, got 1.5"),
        ("top_p", 0.0, "top_p must be above 0"),
        ("top_k", -1, "top_k must be between 0 and 1000, got -1"),
        ("max_new_tokens", 0, "max_new_tokens must be between 1 and 2048, got 0"),
        ("max_new_tokens", 2.5, "max_new_tokens must be an integer, got 2.5"),
        ("repetition_penalty", 0.5, "repetition_penalty must be between 1 and 2, got 0.5"),
        ("seed", -1, "seed must be between 0 and 4294967295, got -1"),
    ],
)
def test_out_of_range_params_raise_value_error_naming_the_value(field, value, message):
    with pytest.raises(ValueError) as error:
        GenerationParams(**{field: value})
    assert message in str(error.value)


# --- stopping ---------------------------------------------------------------------------------------------------


def test_cancel_stops_the_worker_within_one_decoding_step(engine):
    spy = spy_on_forward(engine.load("tiny").model, delay_s=0.002)
    cancel = threading.Event()
    updates, calls_at_cancel = [], None
    for update in engine.stream("tiny", PROMPT, GenerationParams(max_new_tokens=LONG), cancel):
        updates.append(update)
        if len(updates) == 3:
            cancel.set()
            calls_at_cancel = spy["calls"]
    assert spy["calls"] - calls_at_cancel <= 1
    last = final_update(updates)
    assert last.tokens < LONG and last.text.startswith(updates[2].text)  # Stop keeps the text so far
    assert not any(thread.is_alive() for thread in spy["threads"])


def test_closing_the_generator_ends_the_worker_thread(engine):
    spy = spy_on_forward(engine.load("tiny").model, delay_s=0.002)
    stream = engine.stream("tiny", PROMPT, GenerationParams(max_new_tokens=LONG))
    next(stream)
    next(stream)
    stream.close()  # what Gradio does when the browser tab goes away
    # the request's own thread, or the model's batch thread if it batches (the only one that runs the model): gone
    (worker,) = spy["threads"]
    assert worker.name.startswith("mmgpt-generate") and not worker.is_alive()
    calls = spy["calls"]
    time.sleep(0.05)
    assert spy["calls"] == calls < LONG


def test_timeout_ends_the_worker_and_raises(gpt2_dir):
    engine = Engine(device="cpu", timeout_s=0.5, presets=tiny_presets(gpt2_dir, "tiny"))
    spy = spy_on_forward(engine.load("tiny").model, delay_s=0.02)
    started = time.perf_counter()
    with pytest.raises(GenerationTimeout, match="stopped after 0.5 s"):
        for _ in engine.stream("tiny", PROMPT, GenerationParams(max_new_tokens=LONG)):
            pass
    assert time.perf_counter() - started < 3
    assert not any(thread.is_alive() for thread in spy["threads"]) and spy["calls"] < LONG


def test_a_worker_exception_surfaces_in_the_caller_not_as_a_hang(gpt2_dir):
    engine = Engine(device="cpu", timeout_s=10, presets=tiny_presets(gpt2_dir, "tiny"),
                    update_interval_s=0)  # every token its own update, so both before the failure arrive
    spy = spy_on_forward(engine.load("tiny").model, fail_on_call=3)
    started = time.perf_counter()
    updates = []
    with pytest.raises(RuntimeError, match="forward failed on purpose"):
        for update in engine.stream("tiny", PROMPT, GenerationParams(max_new_tokens=LONG)):
            updates.append(update)
    assert time.perf_counter() - started < 5  # well before the 10 s timeout
    assert len(updates) == 2 and not any(u.done for u in updates)
    assert not any(thread.is_alive() for thread in spy["threads"])

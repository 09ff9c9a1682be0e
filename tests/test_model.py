"""Behavioural tests of the mmgpt model: the article's maths, causality, prefix, generation, GPT-2 parity, saving."""

import copy
import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import GPT2Config, GPT2LMHeadModel, TextIteratorStreamer

from mmgpt.model import MMGPTConfig, MMGPTForCausalLM, load_gpt2_weights, sinusoidal_positions
from mmgpt.model.modeling_mmgpt import SelfAttention
from mmgpt.model.processing_mmgpt import pad_left
from mmgpt.model.testing import save_random_checkpoint, tiny_model_and_processor

REPO_ROOT = Path(__file__).resolve().parents[1]
LIVELY = dict(initializer_range=0.3)  # random weights large enough that greedy choices are clear-cut, not near-ties
PROMPTS = ("ROMEO: But soft, what light", "a small red")


@pytest.fixture(scope="module")
def tiny():
    """A tiny random mmgpt whose logits have real preferences, and its processor (32 px images, 400 frames)."""
    return tiny_model_and_processor(seed=0, **LIVELY)


def random_image(seed: int, size=(40, 40)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def random_audio(seed: int, seconds: float = 1.0, sampling_rate: int = 16_000) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sampling_rate))).astype(np.float32)


def prompt_for(processor, modality: str, seed: int = 0, text: str = "a small red circle"):
    """A one-row batch for `modality` ("text", "image" or "audio") with some text after the task token."""
    if modality == "image":
        return processor(images=random_image(seed), text=text)
    if modality == "audio":
        return processor(audio=random_audio(seed), sampling_rate=16_000, text=text)
    return processor(text=text)


def logits_of(model, **inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def greedy(model, inputs, max_new_tokens=10, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **kwargs)


def new_tokens(sequence: torch.Tensor, prompt_length: int, eos_id: int) -> list[int]:
    """The tokens a row generated, up to and including its end-of-text (batched rows are padded past it)."""
    tokens = sequence[prompt_length:].tolist()
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


# ---------------------------------------------------------------------------------------------------------------
# The article's maths


def attention_by_hand(attn: SelfAttention, x: torch.Tensor, causal: bool, blocked_keys=None):
    """`softmax(Q K^T / sqrt(d_k)) V` head by head in float64 from the module's own weights: (output, weights)."""
    B, T, D = x.shape
    H, d_k = attn.n_head, D // attn.n_head
    qkv = x.double() @ attn.c_attn.weight.double().T + attn.c_attn.bias.double()
    q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]
    heads, weights = [], torch.zeros(B, H, T, T, dtype=torch.float64)
    for h in range(H):
        cols = slice(h * d_k, (h + 1) * d_k)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d_k)  # (B, T, T)
        if causal:
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        if blocked_keys is not None:  # (B, T) True where a key may not be attended to
            scores = scores.masked_fill(blocked_keys[:, None, :], float("-inf"))
        weights[:, h] = scores.softmax(dim=-1)
        heads.append(weights[:, h] @ v[..., cols])
    y = torch.cat(heads, dim=-1) @ attn.c_proj.weight.double().T + attn.c_proj.bias.double()
    return y, weights


@pytest.mark.parametrize("output_attentions", [False, True], ids=["sdpa", "explicit"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_attention_equals_softmax_of_scaled_scores_times_values(causal, output_attentions):
    torch.manual_seed(0)
    attn = SelfAttention(MMGPTConfig(vocab_size=99, n_embd=32, n_head=4)).eval()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        y, weights = attn(x, is_causal=causal, output_attentions=output_attentions)
    expected_y, expected_weights = attention_by_hand(attn, x, causal)
    torch.testing.assert_close(y.double(), expected_y, atol=1e-5, rtol=0)
    if output_attentions:
        torch.testing.assert_close(weights.double(), expected_weights, atol=1e-5, rtol=0)
    else:
        assert weights is None


@pytest.mark.parametrize("output_attentions", [False, True], ids=["sdpa", "explicit"])
def test_attention_with_an_additive_mask_ignores_the_masked_keys(output_attentions):
    torch.manual_seed(1)
    attn = SelfAttention(MMGPTConfig(vocab_size=99, n_embd=32, n_head=4)).eval()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 6, 32)
    blocked = torch.zeros(2, 6, dtype=torch.bool)
    blocked[0, :2] = True  # row 0: the first two keys are padding
    blocked[1, 4] = True
    mask = torch.zeros(2, 1, 1, 6).masked_fill(blocked[:, None, None, :], torch.finfo(torch.float32).min)
    with torch.no_grad():
        y, weights = attn(x, mask=mask, output_attentions=output_attentions)
    expected_y, expected_weights = attention_by_hand(attn, x, causal=False, blocked_keys=blocked)
    torch.testing.assert_close(y.double(), expected_y, atol=1e-5, rtol=0)
    if output_attentions:
        torch.testing.assert_close(weights.double(), expected_weights, atol=1e-5, rtol=0)


@pytest.mark.parametrize("length, d_model", [(50, 16), (7, 2), (100, 32)])
def test_positional_table_is_the_articles_sin_cos_formula_entry_by_entry(length, d_model):
    table = sinusoidal_positions(length, d_model, dtype=torch.float64)
    assert table.shape == (length, d_model)
    for pos in range(length):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)
    torch.testing.assert_close(sinusoidal_positions(length, d_model), table.float(), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Causality and the prefix


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
@pytest.mark.parametrize("path", ["sdpa", "padding-mask", "output-attentions"])
def test_changing_a_later_token_leaves_every_earlier_positions_logits_unchanged(tiny, modality, path):
    model, processor = tiny
    inputs = dict(prompt_for(processor, modality, text="ROMEO: But soft, what light through yonder window"))
    T = inputs["input_ids"].shape[1]
    changed_at = T - 4
    kwargs = {"output_attentions": True} if path == "output-attentions" else {}
    if path == "padding-mask":  # one pad on the left forces the explicit (B, 1, T, S) mask path
        pad = processor.token_ids["<|endoftext|>"]
        inputs["input_ids"] = F.pad(inputs["input_ids"], (1, 0), value=pad)
        inputs["attention_mask"] = F.pad(inputs["attention_mask"], (1, 0), value=0)
        changed_at += 1
    changed = copy.deepcopy(inputs)
    changed["input_ids"][0, changed_at] = (inputs["input_ids"][0, changed_at] + 17) % model.config.vocab_size
    before, after = logits_of(model, **inputs, **kwargs), logits_of(model, **changed, **kwargs)
    earlier = inputs["attention_mask"][0, :changed_at].bool()  # real tokens only: a pad's own logits are never used
    torch.testing.assert_close(after[0, :changed_at][earlier], before[0, :changed_at][earlier], atol=1e-6, rtol=0)
    assert (after[:, changed_at:] - before[:, changed_at:]).abs().max() > 1e-3


def text_positions(processor, input_ids: torch.Tensor) -> torch.Tensor:
    """Positions after the task token (everything the model writes or reads as plain text)."""
    task_ids = [processor.token_ids[t] for t in ("<|caption|>", "<|transcribe|>", "<|text|>")]
    task_at = int(torch.isin(input_ids[0], torch.tensor(task_ids)).nonzero()[0])
    return torch.arange(task_at, input_ids.shape[1])


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_changing_the_image_or_the_audio_changes_the_text_logits(tiny, modality):
    model, processor = tiny
    first, second = prompt_for(processor, modality, seed=0), prompt_for(processor, modality, seed=1)
    assert torch.equal(first["input_ids"], second["input_ids"])
    text = text_positions(processor, first["input_ids"])
    difference = (logits_of(model, **first)[:, text] - logits_of(model, **second)[:, text]).abs()
    assert difference.amax(dim=-1).gt(1e-3).all(), "every text position should feel the prefix"


def rerandomized_encoders(model: MMGPTForCausalLM, seed: int) -> MMGPTForCausalLM:
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for encoder in (other.transformer.image_encoder, other.transformer.audio_encoder):
            for p in encoder.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return other


def test_without_image_or_audio_the_model_is_a_plain_language_model(tiny):
    model, processor = tiny
    other = rerandomized_encoders(model, seed=1)
    text = processor(text=list(PROMPTS))
    torch.testing.assert_close(logits_of(other, **text), logits_of(model, **text), atol=0, rtol=0)
    # the re-randomized encoders do matter as soon as there is a prefix
    for modality in ("image", "audio"):
        inputs = prompt_for(processor, modality)
        assert (logits_of(other, **inputs) - logits_of(model, **inputs)).abs().max() > 1e-2


def test_left_padding_leaves_a_prompts_logits_unchanged(tiny):
    model, processor = tiny
    batch = processor(text=list(PROMPTS))
    batch_logits = logits_of(model, **batch)
    for row, prompt in enumerate(PROMPTS):
        alone = logits_of(model, **processor(text=prompt))
        real = batch["attention_mask"][row].bool()
        torch.testing.assert_close(batch_logits[row, real], alone[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Generation


def greedy_without_any_cache(model, inputs, max_new_tokens=10) -> torch.Tensor:
    """Greedy decoding by hand: the whole sequence through the model at every step, argmax of the last position."""
    inputs = dict(inputs)
    ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
    for _ in range(max_new_tokens):
        next_id = logits_of(model, input_ids=ids, attention_mask=mask, **inputs)[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, next_id], dim=1), torch.cat([mask, torch.ones_like(next_id)], dim=1)
        if next_id.item() == model.config.eos_token_id:
            break
    return ids


class ForwardCounter:
    """Counts encoder calls and records how many tokens each decoder call was fed."""

    def __init__(self, model):
        self.encoder_calls = {"image": 0, "audio": 0}
        self.fed_lengths = []
        self.handles = [
            model.transformer.image_encoder.register_forward_hook(lambda *_: self._count("image")),
            model.transformer.audio_encoder.register_forward_hook(lambda *_: self._count("audio")),
            model.register_forward_pre_hook(self._record_length, with_kwargs=True),
        ]

    def _count(self, modality):
        self.encoder_calls[modality] += 1

    def _record_length(self, module, args, kwargs):
        self.fed_lengths.append(kwargs["input_ids"].shape[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_greedy_generate_with_the_cache_gives_the_tokens_of_decoding_without_it(tiny, modality):
    model, processor = tiny
    inputs = prompt_for(processor, modality)
    with_cache = greedy(model, inputs, use_cache=True)
    assert with_cache.shape[1] > inputs["input_ids"].shape[1] + 1
    assert torch.equal(with_cache, greedy(model, inputs, use_cache=False))
    assert torch.equal(with_cache, greedy_without_any_cache(model, inputs))


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_with_the_cache_the_prefix_is_encoded_once_and_each_later_step_feeds_one_token(tiny, modality):
    model, processor = tiny
    inputs = prompt_for(processor, modality)
    prompt_length = inputs["input_ids"].shape[1]
    with ForwardCounter(model) as counter:
        out = greedy(model, inputs, max_new_tokens=6, use_cache=True)
    steps = out.shape[1] - prompt_length
    assert counter.fed_lengths == [prompt_length] + [1] * (steps - 1)
    expected = {"image": 0, "audio": 0} | ({modality: 1} if modality != "text" else {})
    assert counter.encoder_calls == expected
    if modality != "text":  # without the cache the prefix is re-encoded every step: the counter does see calls
        with ForwardCounter(model) as counter:
            greedy(model, inputs, max_new_tokens=6, use_cache=False)
        assert counter.encoder_calls[modality] == steps


@pytest.mark.parametrize("use_cache", [True, False])
def test_prompts_of_different_lengths_batched_with_left_padding_generate_as_they_do_alone(tiny, use_cache):
    model, processor = tiny
    eos = model.config.eos_token_id
    batch = processor(text=list(PROMPTS))
    assert batch["attention_mask"][1, 0] == 0, "the shorter prompt should be padded on the left"
    batched = greedy(model, batch, max_new_tokens=12, use_cache=use_cache)
    width = batch["input_ids"].shape[1]
    for row, prompt in enumerate(PROMPTS):
        alone_inputs = processor(text=prompt)
        alone = greedy(model, alone_inputs, max_new_tokens=12, use_cache=use_cache)[0]
        expected = new_tokens(alone, alone_inputs["input_ids"].shape[1], eos)
        assert len(expected) >= 3
        assert new_tokens(batched[row], width, eos) == expected


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_a_prompt_batched_with_a_longer_one_gives_the_logits_and_tokens_it_gives_alone(tiny, modality):
    model, processor = tiny
    texts = ["a small red circle", "a"]
    if modality == "image":
        images = [random_image(0), random_image(1)]
        batch = processor(images=images, text=texts)
        alone = [processor(images=image, text=text) for image, text in zip(images, texts)]
    else:  # clips of 101 and 62 frames: 26 and 16 audio tokens, so the second row is padded twice over
        clips = [random_audio(0, seconds=1.0), random_audio(1, seconds=0.61)]
        batch = processor(audio=clips, sampling_rate=16_000, text=texts)
        alone = [processor(audio=clip, sampling_rate=16_000, text=text) for clip, text in zip(clips, texts)]
    assert (batch["attention_mask"] == 0).any()
    batch_logits, batched = logits_of(model, **batch), greedy(model, batch, max_new_tokens=8)
    eos, width = model.config.eos_token_id, batch["input_ids"].shape[1]
    for row, inputs in enumerate(alone):
        real = batch["attention_mask"][row].bool()
        torch.testing.assert_close(batch_logits[row, real], logits_of(model, **inputs)[0], atol=1e-4, rtol=0)
        expected = new_tokens(greedy(model, inputs, max_new_tokens=8)[0], inputs["input_ids"].shape[1], eos)
        assert new_tokens(batched[row], width, eos) == expected


def test_text_iterator_streamer_streams_the_text_generate_returns(tiny):
    model, processor = tiny
    inputs = processor(text=PROMPTS[0])
    expected = processor.decode(greedy(model, inputs)[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=30)
    worker = threading.Thread(target=greedy, args=(model, inputs), kwargs={"streamer": streamer})
    worker.start()
    streamed = "".join(streamer)
    worker.join()
    assert streamed == expected


# ---------------------------------------------------------------------------------------------------------------
# Loss


def manual_text_loss(logits, input_ids, attention_mask, placeholder_ids) -> torch.Tensor:
    """Mean cross-entropy of next-token predictions made at a real position about a real, non-placeholder token."""
    losses = []
    for row in range(input_ids.shape[0]):
        for t in range(1, input_ids.shape[1]):
            real = attention_mask[row, t - 1] and attention_mask[row, t]
            if real and int(input_ids[row, t]) not in placeholder_ids:
                losses.append(F.cross_entropy(logits[row, t - 1], input_ids[row, t]))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_loss_is_cross_entropy_over_text_positions_only(tiny, modality):
    model, processor = tiny
    if modality == "image":
        batch = processor(images=[random_image(0), random_image(1)], text=["a small red circle", "a"])
    else:
        clips = [random_audio(0, seconds=1.0), random_audio(1, seconds=0.6)]
        batch = processor(audio=clips, sampling_rate=16_000, text=["a small red circle", "a"])
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    placeholders = {model.config.image_placeholder_id, model.config.audio_placeholder_id}
    expected = manual_text_loss(out.logits, batch["input_ids"], batch["attention_mask"], placeholders)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=0)


def test_labels_at_placeholder_positions_do_not_change_the_loss(tiny):
    model, processor = tiny
    batch = processor(images=random_image(0), text="a small red circle")
    labels = batch["input_ids"].clone()
    scrambled = labels.clone()
    slots = labels == model.config.image_placeholder_id
    generator = torch.Generator().manual_seed(0)
    scrambled[slots] = torch.randint(10, model.config.vocab_size, (int(slots.sum()),), generator=generator)
    with torch.no_grad():
        loss = model(**batch, labels=labels).loss
        scrambled_loss = model(**batch, labels=scrambled).loss
    torch.testing.assert_close(scrambled_loss, loss, atol=0, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_the_loss(tiny, side):
    model, processor = tiny
    alone = processor(images=random_image(0), text="a small red circle")
    ids = alone["input_ids"][0].tolist()
    with torch.no_grad():
        expected = model(**alone, labels=alone["input_ids"]).loss
        for pad_id in (processor.token_ids["<|endoftext|>"], 57):
            if side == "left":
                padded = pad_left([ids, ids + [9, 9, 9]], pad_id)
                row = padded["input_ids"][:1], padded["attention_mask"][:1]
            else:
                row = (torch.tensor([ids + [pad_id] * 3]), torch.tensor([[1] * len(ids) + [0] * 3]))
            loss = model(input_ids=row[0], attention_mask=row[1], pixel_values=alone["pixel_values"],
                         labels=row[0]).loss
            torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0, msg=f"{side} padding with id {pad_id}")


# ---------------------------------------------------------------------------------------------------------------
# Attention maps


def test_output_attentions_gives_one_row_stochastic_map_per_decoder_layer(tiny):
    model, processor = tiny
    batch = processor(images=[random_image(0), random_image(1)], text=["a small red circle", "a"])
    with torch.no_grad():
        attentions = model(**batch, output_attentions=True).attentions
    B, T = batch["input_ids"].shape
    assert len(attentions) == model.config.n_layer
    for layer in attentions:
        assert layer.shape == (B, model.config.n_head, T, T)
        torch.testing.assert_close(layer.sum(dim=-1), torch.ones(B, model.config.n_head, T), atol=1e-5, rtol=0)
        real = batch["attention_mask"].bool()
        for row in range(B):  # real tokens look neither ahead nor at padding (a pad's own row is never used)
            queries = layer[row][:, real[row]]  # (H, real T, T)
            assert torch.all(layer[row].triu(1)[:, real[row]] == 0), "no position may look ahead"
            assert queries[:, :, ~real[row]].sum() == 0


def test_a_generated_tokens_attention_over_the_image_patches_can_be_read_out(tiny):
    model, processor = tiny
    inputs = processor(images=random_image(0))
    prompt_length = inputs["input_ids"].shape[1]
    out = greedy(model, inputs, max_new_tokens=4, output_attentions=True, return_dict_in_generate=True)
    patches = (inputs["input_ids"][0] == model.config.image_placeholder_id).nonzero().squeeze(1)
    grid = model.config.image_size // model.config.patch_size
    step = 2  # the third generated token: fed alone, with the prompt and two tokens in the cache
    last_layer = out.attentions[step][-1]  # (B, H, 1, S)
    assert last_layer.shape == (1, model.config.n_head, 1, prompt_length + step)
    over_patches = last_layer[0, :, 0, patches].mean(dim=0).reshape(grid, grid)  # heads averaged, row-major patches
    assert torch.all(over_patches >= 0) and 0 < over_patches.sum() <= 1 + 1e-6
    # the same map read off one full forward pass over the finished sequence
    with torch.no_grad():
        full = model(input_ids=out.sequences[:, :-1], pixel_values=inputs["pixel_values"], output_attentions=True)
    row = full.attentions[-1][0, :, prompt_length + step - 1, patches].mean(dim=0).reshape(grid, grid)
    torch.testing.assert_close(over_patches, row, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_a_sequence_longer_than_the_context_raises_naming_both_lengths():
    model, _ = tiny_model_and_processor(seed=0, n_positions=32)
    with pytest.raises(ValueError, match=r"\b33\b.*\b32\b"):
        model(input_ids=torch.full((1, 33), 10))
    model(input_ids=torch.full((1, 32), 10))  # exactly the context is fine


def test_generating_past_the_context_raises_naming_both_lengths():
    model, _ = tiny_model_and_processor(seed=0, n_positions=32)
    with pytest.raises(ValueError, match=r"\b33\b.*\b32\b"):
        greedy(model, {"input_ids": torch.full((1, 30), 10)}, max_new_tokens=5, min_new_tokens=5)


# ---------------------------------------------------------------------------------------------------------------
# The image encoder's convolutional stem and position tables


@pytest.mark.parametrize("stem_layers", [1, 2, 3])
def test_a_convolutional_stem_keeps_one_prefix_token_per_patch(stem_layers):
    model, processor = tiny_model_and_processor(seed=0, image_stem_layers=stem_layers, **LIVELY)
    pixels = processor(images=random_image(0))["pixel_values"]
    patches = model.transformer.image_encoder(pixels)
    assert patches.shape == (1, model.config.num_patches, model.config.n_embd)
    assert [m.stride for m in model.transformer.image_encoder.stem if isinstance(m, torch.nn.Conv2d)] == \
        [(2, 2)] * stem_layers


@pytest.mark.parametrize("stem_blocks", [0, 1])
def test_a_model_with_a_stem_saves_and_loads_to_the_same_logits(tmp_path, stem_blocks):
    """Loading must keep the trained stem and position tables, not re-initialize them."""
    model, processor = tiny_model_and_processor(seed=4, image_stem_layers=2, image_stem_blocks=stem_blocks,
                                                image_position_std=0.5)
    if stem_blocks:  # trained blocks, not the zeros they start from
        for block in model.transformer.image_encoder.stem_blocks.modules():
            if isinstance(block, torch.nn.Conv2d):
                torch.nn.init.normal_(block.weight, std=0.05)
    model.save_pretrained(tmp_path)
    loaded = MMGPTForCausalLM.from_pretrained(tmp_path).eval()
    batch = processor(images=random_image(0), text="a small")
    torch.testing.assert_close(logits_of(loaded, **batch), logits_of(model, **batch))


def test_stem_blocks_grown_on_a_saved_model_leave_its_answers_unchanged_until_they_learn(tmp_path):
    model, processor = tiny_model_and_processor(seed=4, image_stem_layers=2, **LIVELY)
    model.save_pretrained(tmp_path)
    grown = MMGPTForCausalLM.from_pretrained(tmp_path, image_stem_blocks=2).eval()
    batch = processor(images=random_image(0), text="a small")

    assert [len(blocks) for blocks in grown.transformer.image_encoder.stem_blocks] == [2, 2]
    torch.testing.assert_close(logits_of(grown, **batch), logits_of(model, **batch))
    with torch.no_grad():  # the blocks are on the image's path: once they hold weights, the answer moves
        grown.transformer.image_encoder.stem_blocks[1][0].conv2.weight.normal_(std=0.05)
    assert not torch.allclose(logits_of(grown, **batch), logits_of(model, **batch))


def test_image_position_tables_start_at_the_configured_scale():
    for std in (None, 0.3):
        model, _ = tiny_model_and_processor(seed=0, n_embd=64, image_position_std=std)
        table = model.transformer.image_encoder.row_embed.weight
        expected = std or model.config.initializer_range
        assert abs(table.std().item() - expected) < 0.25 * expected


def test_a_stem_that_would_shrink_a_patch_below_one_pixel_raises_naming_both_numbers():
    with pytest.raises(ValueError, match=r"patch_size \(8\).*\b16\b"):
        MMGPTConfig(patch_size=8, image_stem_layers=4)


@pytest.mark.parametrize("change", [-1, +1])
def test_a_wrong_number_of_image_placeholders_raises(tiny, change):
    model, processor = tiny
    inputs = dict(processor(images=random_image(0), text="a"))
    ids = inputs["input_ids"][0].tolist()
    patch = model.config.image_placeholder_id
    first, n = ids.index(patch), model.config.num_patches
    ids = ids[:first] + [patch] * (n + change) + ids[first + n :]
    with pytest.raises(ValueError, match=str(model.config.num_patches)):
        model(input_ids=torch.tensor([ids]), pixel_values=inputs["pixel_values"])


@pytest.mark.parametrize("task", ["caption", "continue", "ask"])
def test_a_reserved_token_typed_by_a_user_is_read_as_text(tiny, task):
    """Typed text never adds a token that gives the sequence its structure: "<|patch|>" in a caption's start, a
    prompt or a question (and its earlier turns) is those characters, so every reserved token appears as often as
    it does for plain text."""
    _, processor = tiny
    reserved = set(processor.token_ids.values())

    def structure(text: str) -> list[int]:
        ids = (processor.ask_ids(text, history=[(text, text)]) if task == "ask" else processor.prompt_ids(task, text))
        return [i for i in ids if i in reserved]

    typed = " ".join(processor.token_ids)  # every reserved token's name
    assert structure(f"what is {typed}?") == structure("what is it?")
    assert processor.tokenizer.decode(processor.prompt_ids("continue", typed)[1:]) == typed


def test_more_audio_placeholders_than_the_features_give_raises(tiny):
    model, processor = tiny
    inputs = processor(audio=random_audio(0, seconds=0.5), sampling_rate=16_000)
    ids = inputs["input_ids"]
    extra = torch.full((1, 3), model.config.audio_placeholder_id)
    with pytest.raises(ValueError, match="audio placeholders"):
        model(input_ids=torch.cat([ids[:, :2], extra, ids[:, 2:]], dim=1), input_features=inputs["input_features"])


# ---------------------------------------------------------------------------------------------------------------
# GPT-2 parity


def random_gpt2(seed: int = 0, **sizes) -> GPT2LMHeadModel:
    """GPT-2 with every weight random, layer norms included, so that a wrongly copied tensor shows in the logits."""
    config = GPT2Config(**{**dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64), **sizes},
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(seed)
    gpt2 = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in gpt2.named_parameters():
            is_norm_scale = ".ln_" in name and name.endswith(".weight")
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if is_norm_scale else 0.0))
    return gpt2


def mmgpt_like(gpt2: GPT2LMHeadModel, **overrides) -> MMGPTForCausalLM:
    c = gpt2.config
    sizes = dict(vocab_size=c.vocab_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
                 n_positions=c.n_positions, image_size=16, patch_size=8, image_layers=1, audio_layers=1)
    return MMGPTForCausalLM(MMGPTConfig(**{**sizes, **overrides})).eval()


@pytest.fixture(scope="module")
def gpt2_pair():
    gpt2 = random_gpt2()
    return gpt2, load_gpt2_weights(mmgpt_like(gpt2), gpt2.state_dict())


def test_decoder_with_gpt2_weights_gives_gpt2s_logits(gpt2_pair):
    gpt2, model = gpt2_pair
    ids = torch.randint(10, 99, (3, 20), generator=torch.Generator().manual_seed(0))
    expected = logits_of(gpt2, input_ids=ids)
    assert expected.std() > 1.0, "the reference logits should not be near zero"
    torch.testing.assert_close(logits_of(model, input_ids=ids), expected, atol=1e-4, rtol=0)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "embeddings stay tied"


def test_decoder_with_gpt2_weights_generates_gpt2s_greedy_tokens(gpt2_pair):
    gpt2, model = gpt2_pair
    ids = torch.randint(10, 99, (1, 6), generator=torch.Generator().manual_seed(1))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    kwargs = dict(max_new_tokens=12, pad_token_id=0, eos_token_id=None)
    expected = greedy(gpt2, inputs, **kwargs)
    assert len(set(expected[0, 6:].tolist())) > 2
    assert torch.equal(greedy(model, inputs, **kwargs), expected)


@pytest.mark.parametrize(
    "gpt2_sizes, mmgpt_sizes, named",
    [
        (dict(n_embd=32), dict(n_embd=64), ["(99, 32)", "(99, 64)"]),
        (dict(vocab_size=99), dict(vocab_size=100), ["(99, 32)", "(100, 32)"]),
        (dict(n_layer=3), dict(n_layer=2), ["transformer.h.2"]),
        (dict(n_layer=2), dict(n_layer=3), ["transformer.h.2"]),
        (dict(n_positions=64), dict(n_positions=128), ["(64, 32)", "(128, 32)"]),
    ],
    ids=["width", "vocab", "more-layers", "fewer-layers", "positions"],
)
def test_gpt2_converter_raises_naming_the_mismatch_when_sizes_differ(gpt2_sizes, mmgpt_sizes, named):
    gpt2 = GPT2LMHeadModel(GPT2Config(**{**dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64),
                                          **gpt2_sizes}))
    model = mmgpt_like(gpt2, **mmgpt_sizes)
    with pytest.raises(ValueError) as error:
        load_gpt2_weights(model, gpt2.state_dict())
    for text in named:
        assert text in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading through the Auto classes


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import torch
    import mmgpt  # registers mmgpt with the Auto classes; nothing else of mmgpt is used here
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    checkpoint, raw_path, out_path = sys.argv[1:]
    raw = torch.load(raw_path, weights_only=False)
    config = AutoConfig.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = {
        "text": processor(text=raw["prompts"]),
        "image": processor(images=raw["images"], text=raw["prompts"]),
        "audio": processor(audio=raw["clips"], sampling_rate=16000, text=raw["prompts"]),
    }
    result = {"config_class": type(config).__name__, "processor_class": type(processor).__name__,
              "inputs": {name: dict(batch) for name, batch in inputs.items()}, "logits": {}, "model_class": {}}
    for auto in (AutoModelForCausalLM, AutoModelForImageTextToText):
        model = auto.from_pretrained(checkpoint).eval()
        result["model_class"][auto.__name__] = type(model).__name__
        with torch.no_grad():
            result["logits"][auto.__name__] = {name: model(**batch).logits for name, batch in inputs.items()}
    torch.save(result, out_path)
    """
)


def test_saved_model_loads_through_the_auto_classes_in_a_fresh_offline_process(tmp_path):
    checkpoint = save_random_checkpoint(tmp_path / "checkpoint", seed=3, **LIVELY)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in checkpoint.iterdir()}
    model, processor = tiny_model_and_processor(seed=3, **LIVELY)  # the same weights as were saved
    raw = {"prompts": list(PROMPTS), "images": [random_image(0), random_image(1, size=(20, 50))],
           "clips": [random_audio(0, seconds=0.7), random_audio(1, seconds=0.4)]}
    torch.save(raw, tmp_path / "raw.pt")
    (tmp_path / "fresh.py").write_text(FRESH_PROCESS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "fresh.py"), str(checkpoint), str(tmp_path / "raw.pt"),
         str(tmp_path / "out.pt")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt", weights_only=False)

    assert result["config_class"] == "MMGPTConfig" and result["processor_class"] == "MMGPTProcessor"
    assert set(result["model_class"].values()) == {"MMGPTForCausalLM"}
    here = {
        "text": processor(text=raw["prompts"]),
        "image": processor(images=raw["images"], text=raw["prompts"]),
        "audio": processor(audio=raw["clips"], sampling_rate=16_000, text=raw["prompts"]),
    }
    for name, batch in here.items():
        assert result["inputs"][name].keys() == batch.keys()
        for key, value in batch.items():
            # Token ids must match exactly; features and logits to float32 rounding, since multi-threaded sums
            # may add up in a different order in another process.
            torch.testing.assert_close(result["inputs"][name][key], value, atol=1e-6, rtol=1e-5,
                                       msg=f"{name} {key} differs after loading")
        expected = logits_of(model, **batch)
        for auto, logits in result["logits"].items():
            torch.testing.assert_close(logits[name], expected, atol=1e-5, rtol=1e-5, msg=f"{auto} on {name}")

"""Behavioural tests of the mmgpt processor: tokenizer, images, audio and saving."""

import json

import librosa
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from mmgpt.audio import N_MELS, SAMPLE_RATE, frames_for_samples
from mmgpt.model import SPECIAL_TOKENS, MMGPTConfig, MMGPTProcessor
from mmgpt.model.testing import tiny_model_and_processor

UNICODE_PROMPTS = (
    "机器学习很有趣，对吧？🚀🎉",
    "你好，世界 😀 👩‍👩‍👧 naïve café — ½ ∑ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "Hello , world ! don 't  two  spaces\ttab\nnewline ",
    " leading space and trailing space ",
)


@pytest.fixture(scope="module")
def processor() -> MMGPTProcessor:
    """The tiny processor: 32 px images in 8 px patches, at most 400 audio frames (3.99 s)."""
    return tiny_model_and_processor(seed=0)[1]


def tone(seconds: float, sampling_rate: int, channels: int = 0, freq: float = 440.0) -> np.ndarray:
    """A sine at `freq`: `(samples,)`, or `(samples, channels)` when `channels` is given."""
    t = np.arange(int(round(seconds * sampling_rate))) / sampling_rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1) if channels else wave


def frames_after_resampling(seconds: float, sampling_rate: int) -> int:
    """Frames librosa's resampling to 16 kHz leaves for a clip of this length (what the processor must give)."""
    samples = int(round(seconds * sampling_rate))
    resampled = librosa.resample(np.zeros(samples, np.float32), orig_sr=sampling_rate, target_sr=SAMPLE_RATE)
    return frames_for_samples(len(resampled))


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer


@pytest.mark.parametrize("prompt", UNICODE_PROMPTS)
def test_any_unicode_prompt_round_trips_through_the_tokenizer(processor, prompt):
    ids = processor.tokenizer.encode(prompt, add_special_tokens=False)
    assert processor.tokenizer.decode(ids) == prompt
    # and through a whole continue prompt, special tokens dropped on the way back
    batch = processor(text=prompt)
    assert processor.decode(batch["input_ids"][0], skip_special_tokens=True) == prompt


def test_tokenizer_is_a_byte_level_bpe_saved_as_tokenizer_json(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["model"]["type"] == "BPE"
    assert "ByteLevel" in json.dumps(saved["pre_tokenizer"]) and saved["decoder"]["type"] == "ByteLevel"
    specials = {token["content"]: token["id"] for token in saved["added_tokens"] if token["special"]}
    assert specials == {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    config = MMGPTConfig()
    assert specials["<|image|>"] == config.image_token_id and specials["<|patch|>"] == config.image_placeholder_id
    assert specials["<|audio|>"] == config.audio_token_id and specials["<|frame|>"] == config.audio_placeholder_id


def test_prompts_are_left_padded_for_generation(processor):
    batch = processor(text=["a much longer prompt than the other", "a"])
    mask = batch["attention_mask"]
    assert mask[0].all() and mask[1, 0] == 0 and mask[1, -1] == 1
    assert torch.equal(batch["input_ids"][1, mask[1] == 0], torch.full(((mask[1] == 0).sum(),), 0))


# ---------------------------------------------------------------------------------------------------------------
# Images


RED = (200, 30, 40)


def red_image_in(mode: str, size=(50, 30)) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.full((size[1], size[0]), 20_000, dtype=np.uint16))
    return Image.new("RGB", size, RED).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "CMYK", "I;16", "1", "I", "F"])
def test_an_image_in_any_mode_becomes_normalized_rgb_at_the_models_size(processor, mode):
    image = red_image_in(mode)
    assert image.mode == mode
    pixels = processor(images=image)["pixel_values"]
    assert pixels.shape == (1, 3, processor.image_size, processor.image_size)
    assert pixels.dtype == torch.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    if mode in ("RGB", "RGBA", "P", "CMYK"):  # colour survives the conversion
        expected = torch.tensor([(c / 255 - 0.5) / 0.5 for c in RED])
        torch.testing.assert_close(pixels[0].mean(dim=(1, 2)), expected, atol=0.05, rtol=0)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_become_white(processor, mode):
    if mode == "P":
        image = Image.new("P", (20, 20), 3)
        image.putpalette([0, 0, 0] * 256)
        image.info["transparency"] = 3
    else:
        image = Image.new(mode, (20, 20), (0,) * len(mode))  # black, and fully transparent
    pixels = processor.image_to_pixels(image)
    np.testing.assert_allclose(pixels, 1.0)


def test_half_transparent_red_is_blended_onto_white(processor):
    pixels = processor.image_to_pixels(Image.new("RGBA", (20, 20), (*RED, 128)))
    blended = [(c * 128 + 255 * 127) / 255 for c in RED]
    np.testing.assert_allclose(pixels.mean(axis=(1, 2)), [(c / 255 - 0.5) / 0.5 for c in blended], atol=0.02)


def test_a_16_bit_grey_image_keeps_its_brightness(processor):
    """A 16-bit mid grey is shown mid grey by any viewer; it must not be stretched to white by its own maximum."""
    mid_grey = Image.fromarray(np.full((20, 20), 32_768, dtype=np.uint16))
    assert mid_grey.mode == "I;16"
    np.testing.assert_allclose(processor.image_to_pixels(mid_grey), 0.0, atol=0.02)


# ---------------------------------------------------------------------------------------------------------------
# Audio


@pytest.mark.parametrize("seconds", [1.25, 0.7])
def test_8_khz_stereo_and_48_khz_mono_of_one_length_give_the_expected_frame_count(processor, seconds):
    expected = frames_after_resampling(seconds, 8_000)
    assert expected == frames_after_resampling(seconds, 48_000)
    assert abs(expected - frames_for_samples(int(seconds * SAMPLE_RATE))) <= 1
    for clip, rate in ((tone(seconds, 8_000, channels=2), 8_000), (tone(seconds, 48_000), 48_000)):
        batch = processor(audio=[clip], sampling_rate=rate)
        assert batch["input_features"].shape == (1, N_MELS, expected)
        placeholders = (batch["input_ids"][0] == processor.token_ids["<|frame|>"]).sum()
        assert placeholders == MMGPTConfig.audio_tokens_for_frames(expected)


def test_one_stereo_clip_is_one_prompt(processor):
    stereo = tone(0.05, 8_000, channels=2)  # (samples, channels), as soundfile and Gradio give it
    batch = processor(audio=stereo, sampling_rate=8_000)
    assert batch["input_features"].shape == (1, N_MELS, frames_after_resampling(0.05, 8_000))
    assert batch["input_ids"].shape[0] == 1


def test_stereo_is_mixed_down_to_mono(processor):
    mono = tone(0.5, 16_000)
    same_in_both_channels = np.stack([mono, mono], axis=1)
    np.testing.assert_allclose(processor.audio_to_features(same_in_both_channels, 16_000),
                               processor.audio_to_features(mono, 16_000), atol=1e-6)


def test_audio_of_the_longest_allowed_length_is_accepted_and_longer_raises_naming_the_limit(processor):
    limit = processor.max_audio_seconds
    longest = tone(limit, SAMPLE_RATE)
    assert processor.audio_to_features(longest, SAMPLE_RATE).shape == (N_MELS, processor.max_audio_frames)
    too_long = tone(limit + 0.5, SAMPLE_RATE)
    with pytest.raises(ValueError, match=rf"{limit:.2f} s") as error:
        processor(audio=too_long, sampling_rate=SAMPLE_RATE)
    assert str(processor.max_audio_frames) in str(error.value)


def test_audio_without_a_sampling_rate_raises(processor):
    with pytest.raises(ValueError, match="sampling_rate"):
        processor(audio=tone(0.5, 16_000), sampling_rate=None)


def test_images_and_audio_together_raise(processor):
    with pytest.raises(ValueError, match="not both"):
        processor(images=red_image_in("RGB"), audio=tone(0.5, 16_000), sampling_rate=16_000)


# ---------------------------------------------------------------------------------------------------------------
# Saving


@pytest.mark.parametrize("loader", [MMGPTProcessor.from_pretrained, AutoProcessor.from_pretrained],
                         ids=["MMGPTProcessor", "AutoProcessor"])
def test_save_pretrained_and_from_pretrained_round_trip(processor, tmp_path, loader):
    assert (processor.image_size, processor.max_audio_frames) != (64, 1000), "use sizes that differ from defaults"
    processor.save_pretrained(tmp_path)
    loaded = loader(tmp_path)
    assert isinstance(loaded, MMGPTProcessor)
    assert (loaded.image_size, loaded.patch_size, loaded.max_audio_frames) == (
        processor.image_size, processor.patch_size, processor.max_audio_frames)
    assert loaded.token_ids == processor.token_ids
    for prompt in UNICODE_PROMPTS:
        assert loaded.tokenizer.encode(prompt) == processor.tokenizer.encode(prompt)
    image, clip = red_image_in("RGBA"), tone(0.7, 22_050)
    for kwargs in (dict(text=list(UNICODE_PROMPTS)), dict(images=image, text="a"),
                   dict(audio=clip, sampling_rate=22_050)):
        expected, got = processor(**kwargs), loaded(**kwargs)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(got[key], expected[key]), key


def test_the_words_written_down_for_a_spoken_question_end_where_its_answer_would_begin():
    model, processor = tiny_model_and_processor(seed=0)
    with pytest.raises(ValueError, match="answers spoken questions from the audio"):
        _ = processor.heard_question_ends
    processor.transcribes_spoken_questions = True
    assert sorted(processor.heard_question_ends) == sorted([processor.token_ids["<|answer|>"],
                                                            model.generation_config.eos_token_id])

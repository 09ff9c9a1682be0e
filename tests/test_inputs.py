"""Every kind of bad input from the reliability issue, made here in tmp_path, and what the user is told about it.

Each bad row asserts the message key (the class of message the user sees), a keyword of its English text, and
that the next good input still works. Good rows check the cleaned value.
"""

import struct
import zlib

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmgpt import inputs
from mmgpt.audio import SAMPLE_RATE
from mmgpt.i18n import TRANSLATIONS, translate
from mmgpt.inputs import MAX_AUDIO_SECONDS, InputError, clean_prompt, load_audio, load_image

# --- helpers that write files ---------------------------------------------------------------------------------------


def png_with_declared_size(path, width, height):
    """A valid PNG header (correct CRCs) declaring `width`x`height`, with a one-row IDAT: a decompression bomb."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def picture(path, size=(64, 48), mode="RGB", color=(200, 30, 30), **save):
    Image.new(mode, size, color).save(path, **save)
    return path


def speech_like(seconds=1.0, rate=SAMPLE_RATE, amplitude=0.3, channels=1):
    """A tone with an envelope: loud enough to count as sound."""
    t = np.arange(int(seconds * rate)) / rate
    mono = (amplitude * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def wav(path, seconds=1.0, rate=SAMPLE_RATE, channels=1, subtype="PCM_16"):
    sf.write(path, speech_like(seconds, rate, channels=channels), rate, subtype=subtype)
    return path


def assert_good_image(tmp_path):
    image = load_image(picture(tmp_path / "next-good.png"))
    assert image.mode == "RGB" and image.size == (64, 48)


def assert_good_audio(tmp_path):
    clip = load_audio(wav(tmp_path / "next-good.wav"))
    assert clip.waveform.dtype == np.float32 and abs(clip.seconds - 1.0) < 0.01


# --- bad images -----------------------------------------------------------------------------------------------------


def _none(tmp_path):
    return None


def _empty_png(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path


def _corrupt_png(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return path


def _truncated_png(tmp_path):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    noisy.save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_jpeg(tmp_path):
    noisy = Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    noisy.save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[:400])
    return path


def _text_as_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a shopping list, not a picture\n" * 20)
    return path


def _bomb_100mp(tmp_path):
    return png_with_declared_size(tmp_path / "bomb.png", 10_000, 10_000)  # under PIL's own limit, over ours


def _bomb_10gp(tmp_path):
    return png_with_declared_size(tmp_path / "bomb-huge.png", 100_000, 100_000)  # over PIL's limit too


def _strip(tmp_path):
    return picture(tmp_path / "strip.png", size=(2000, 50))


BAD_IMAGES = [
    ("none given", _none, "image_missing", "No image"),
    ("zero-byte file", _empty_png, "image_empty_file", "empty"),
    ("corrupt file", _corrupt_png, "image_corrupt", "damaged"),
    ("truncated png", _truncated_png, "image_corrupt", "truncated"),
    ("truncated jpeg", _truncated_jpeg, "image_corrupt", "truncated"),
    ("non-image with image extension", _text_as_jpg, "image_not_image", "not a picture"),
    ("decompression bomb 100 MP", _bomb_100mp, "image_too_large", "too large"),
    ("decompression bomb 10 GP", _bomb_10gp, "image_too_large_declared", "decompression bomb"),
    ("extreme aspect ratio 40:1", _strip, "image_aspect", "Crop"),
]


@pytest.mark.parametrize("make, key, keyword", [row[1:] for row in BAD_IMAGES], ids=[row[0] for row in BAD_IMAGES])
def test_bad_image_is_refused_with_a_message(tmp_path, make, key, keyword):
    with pytest.raises(InputError) as caught:
        load_image(make(tmp_path))
    assert caught.value.key == key
    assert keyword in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert_good_image(tmp_path)


def test_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    def fail_load(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", fail_load)
    with pytest.raises(InputError, match="too large"):
        load_image(_bomb_100mp(tmp_path))


def test_missing_file_path(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(str(tmp_path / "gone.png"))


# --- good images ----------------------------------------------------------------------------------------------------


def test_exif_rotation_is_honoured(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert load_image(str(tmp_path / "rotated.jpg")).size == (10, 20)


@pytest.mark.parametrize("mode, color", [("CMYK", (0, 255, 255, 0)), ("L", 128), ("1", 1), ("I;16", 65535),
                                         ("I", 40000), ("F", 0.5), ("P", 5), ("YCbCr", (76, 85, 255))])
def test_any_mode_becomes_rgb(tmp_path, mode, color):
    suffix = {"CMYK": "jpg", "I": "tif", "F": "tif", "YCbCr": "jpg"}.get(mode, "png")
    path = picture(tmp_path / f"mode.{suffix}", mode=mode, color=color)
    image = load_image(str(path))
    assert image.mode == "RGB" and image.size == (64, 48)


def test_cmyk_cyan_becomes_rgb_cyan(tmp_path):
    image = load_image(picture(tmp_path / "cmyk.jpg", mode="CMYK", color=(255, 0, 0, 0)))
    red, green, blue = image.getpixel((10, 10))
    assert red < 40 and green > 200 and blue > 200


def test_sixteen_bit_white_stays_white(tmp_path):
    image = load_image(picture(tmp_path / "deep.png", mode="I;16", color=65535))
    assert image.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode, color", [("RGBA", (255, 0, 0, 0)), ("LA", (0, 0)), ("PA", (3, 0))])
def test_transparent_pixels_become_white(tmp_path, mode, color):
    image = Image.new(mode, (8, 8), color)
    image.save(tmp_path / "alpha.png") if mode != "PA" else image.convert("RGBA").save(tmp_path / "alpha.png")
    assert load_image(tmp_path / "alpha.png").getpixel((4, 4)) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.save(tmp_path / "palette.gif", transparency=1)
    assert load_image(tmp_path / "palette.gif").getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_first_frame_and_a_note(tmp_path):
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    notes = []
    image = load_image(str(tmp_path / "anim.gif"), notes)
    red, green, blue = image.getpixel((8, 8))
    assert red > 200 and green < 50 and blue < 50
    assert [note.key for note in notes] == ["image_first_frame"] and "first frame" in str(notes[0])


def test_one_by_one_and_edge_aspect_are_accepted(tmp_path):
    assert load_image(picture(tmp_path / "dot.png", size=(1, 1))).size == (1, 1)
    assert load_image(picture(tmp_path / "edge.png", size=(400, 20))).size == (400, 20)


def test_big_picture_is_shrunk_and_pil_image_accepted():
    image = load_image(Image.new("RGB", (4096, 3072), (1, 2, 3)))
    assert max(image.size) == inputs.MAX_IMAGE_SIDE and image.size[0] / image.size[1] == pytest.approx(4 / 3, 0.01)


def test_gradio_payload_and_data_url(tmp_path):
    import base64

    path = picture(tmp_path / "payload.png")
    assert load_image({"path": str(path), "url": None}).size == (64, 48)
    url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    assert load_image({"path": None, "url": url}).size == (64, 48)
    with pytest.raises(InputError, match="No image"):
        load_image({"path": None, "url": None})


# --- bad audio ------------------------------------------------------------------------------------------------------


def _empty_wav(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    return path


def _corrupt_wav(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\xff\xff\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    return path


def _truncated_wav(tmp_path):
    data = wav(tmp_path / "full.wav").read_bytes()
    path = tmp_path / "truncated.wav"
    path.write_bytes(data[:30])  # cut inside the header
    return path


def _header_only_wav(tmp_path):
    data = wav(tmp_path / "full.wav").read_bytes()
    path = tmp_path / "header-only.wav"
    path.write_bytes(data[:44])  # a header and no samples
    return path


def _text_as_wav(tmp_path):
    path = tmp_path / "speech.wav"
    path.write_text("hello, this is a text file pretending to be speech\n" * 20)
    return path


def _text_as_mp3(tmp_path):
    path = tmp_path / "song.mp3"
    path.write_text("la la la " * 200)
    return path


def _silent_wav(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    return path


def _dither_only(tmp_path):
    noise = np.random.default_rng(0).integers(-2, 3, SAMPLE_RATE).astype(np.int16)  # a muted microphone
    return (SAMPLE_RATE, noise)


def _all_nan(tmp_path):
    return (SAMPLE_RATE, np.full(SAMPLE_RATE, np.nan, dtype=np.float32))


def _rate_too_low(tmp_path):
    return (500, (speech_like(1.0, 500) * 32767).astype(np.int16))


def _rate_too_high(tmp_path):
    return (1_000_000, np.zeros(100, dtype=np.float32))


def _nine_channels(tmp_path):
    return (SAMPLE_RATE, speech_like(1.0, channels=9))


def _three_d_array(tmp_path):
    return (SAMPLE_RATE, np.zeros((2, 2, 2), dtype=np.float32))


def _strings(tmp_path):
    return (SAMPLE_RATE, np.array(["a", "b"]))


def _too_short(tmp_path):
    return (SAMPLE_RATE, speech_like(0.01))


BAD_AUDIO = [
    ("none given", _none, "audio_missing", "No audio"),
    ("zero-byte file", _empty_wav, "audio_empty_file", "empty"),
    ("corrupt file", _corrupt_wav, "audio_unreadable", "damaged"),
    ("truncated file", _truncated_wav, "audio_unreadable", "cut short"),
    ("header without samples", _header_only_wav, "audio_no_samples", "no audio samples"),
    ("non-audio with .wav extension", _text_as_wav, "audio_unreadable", "not audio"),
    ("non-audio with .mp3 extension", _text_as_mp3, "audio_unreadable", "not audio"),
    ("silence", _silent_wav, "audio_silence", "No speech was heard"),
    ("muted microphone (dither)", _dither_only, "audio_silence", "No speech was heard"),
    ("only NaN samples", _all_nan, "audio_silence", "No speech was heard"),
    ("sample rate 500 Hz", _rate_too_low, "audio_bad_rate", "sample rate"),
    ("sample rate 1 MHz", _rate_too_high, "audio_bad_rate", "sample rate"),
    ("9 channels", _nine_channels, "audio_bad_channels", "channels"),
    ("3-D array", _three_d_array, "audio_bad_shape", "shape"),
    ("string samples", _strings, "audio_bad_dtype", "int16"),
    ("10 ms", _too_short, "audio_too_short", "at least"),
]


@pytest.mark.parametrize("make, key, keyword", [row[1:] for row in BAD_AUDIO], ids=[row[0] for row in BAD_AUDIO])
def test_bad_audio_is_refused_with_a_message(tmp_path, make, key, keyword):
    with pytest.raises(InputError) as caught:
        load_audio(make(tmp_path))
    assert caught.value.key == key
    assert keyword in str(caught.value)
    assert_good_audio(tmp_path)


def test_webm_without_ffmpeg_says_ffmpeg_is_needed(tmp_path, monkeypatch):
    path = tmp_path / "recording.webm"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(200))  # an EBML (Matroska/WebM) header soundfile cannot read
    monkeypatch.setattr(inputs, "ffmpeg_available", lambda: False)
    with pytest.raises(InputError) as caught:
        load_audio(str(path))
    assert caught.value.key == "audio_needs_ffmpeg"
    assert "ffmpeg is needed to read .webm files" in str(caught.value)
    assert "apt-get install ffmpeg" in str(caught.value)
    assert_good_audio(tmp_path)


@pytest.mark.skipif(not inputs.ffmpeg_available(), reason="ffmpeg is not installed")
@pytest.mark.parametrize("extension, codec", [("webm", "libopus"), ("m4a", "aac")])
def test_ffmpeg_containers_decode(tmp_path, extension, codec):
    import subprocess

    source = wav(tmp_path / "source.wav", seconds=2.0, rate=48_000, channels=2)
    target = tmp_path / f"recording.{extension}"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(source), "-c:a", codec, str(target)],
                   check=True, timeout=60)
    clip = load_audio(str(target))
    assert abs(clip.seconds - 2.0) < 0.1 and clip.waveform.dtype == np.float32


@pytest.mark.skipif(not inputs.ffmpeg_available(), reason="ffmpeg is not installed")
def test_ffmpeg_refuses_playlists_that_point_elsewhere(tmp_path):
    path = tmp_path / "evil.webm"
    path.write_text("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.0,\n/etc/passwd\n#EXT-X-ENDLIST\n")
    with pytest.raises(InputError, match="could not be read as audio"):
        load_audio(str(path))


# --- good audio -----------------------------------------------------------------------------------------------------


def test_8k_stereo_int16_becomes_16k_mono_float32():
    stereo = (speech_like(1.0, 8_000, channels=2) * 32767).astype(np.int16)
    clip = load_audio((8_000, stereo))
    assert clip.waveform.dtype == np.float32 and clip.waveform.ndim == 1
    assert clip.waveform.size == SAMPLE_RATE and clip.seconds == pytest.approx(1.0)
    assert not clip.truncated and clip.notes == []
    assert 0.2 < np.abs(clip.waveform).max() <= 1.0


@pytest.mark.parametrize("rate", [8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000])
def test_sample_rates_8_to_96_khz(tmp_path, rate):
    clip = load_audio(str(wav(tmp_path / f"r{rate}.wav", seconds=0.5, rate=rate)))
    assert clip.waveform.size == pytest.approx(SAMPLE_RATE // 2, abs=2)


@pytest.mark.parametrize("channels", range(1, 9))
def test_one_to_eight_channels(tmp_path, channels):
    clip = load_audio(str(wav(tmp_path / f"c{channels}.wav", seconds=0.5, channels=channels)))
    assert clip.waveform.ndim == 1 and clip.waveform.size == SAMPLE_RATE // 2


@pytest.mark.parametrize("dtype, scale", [(np.int16, 32767), (np.int32, 2**31 - 1), (np.float32, 1.0),
                                          (np.float64, 1.0), (np.uint8, None)])
def test_microphone_array_types(dtype, scale):
    wave = speech_like(0.5, 48_000)
    samples = ((wave + 1) * 127.5).astype(np.uint8) if scale is None else (wave * scale).astype(dtype)
    clip = load_audio((48_000, samples))
    assert clip.waveform.dtype == np.float32 and 0.2 < np.abs(clip.waveform).max() <= 1.0


def test_channels_first_array_is_understood():
    clip = load_audio((SAMPLE_RATE, speech_like(0.5, channels=2).T.copy()))
    assert clip.waveform.size == SAMPLE_RATE // 2


def test_nan_and_inf_are_replaced_and_noted():
    wave = speech_like(1.0)
    wave[100:110] = np.nan
    wave[200] = np.inf
    clip = load_audio((SAMPLE_RATE, wave))
    assert np.isfinite(clip.waveform).all()
    assert [note.key for note in clip.notes] == ["audio_nonfinite"] and "11 samples" in str(clip.notes[0])


def test_clipping_is_accepted_and_noted():
    loud = np.clip(speech_like(1.0, amplitude=3.0), -1.0, 1.0)
    clip = load_audio((SAMPLE_RATE, (loud * 32767).astype(np.int16)))
    assert [note.key for note in clip.notes] == ["audio_clipped"] and "clipped" in str(clip.notes[0])


def test_float_beyond_full_scale_is_scaled_down():
    clip = load_audio((SAMPLE_RATE, speech_like(1.0) * 1000))
    assert np.abs(clip.waveform).max() <= 1.0 and [n.key for n in clip.notes] == ["audio_rescaled"]


def test_longer_than_the_limit_keeps_the_start_and_says_so():
    rate = 8_000
    samples = np.tile((speech_like(1.0, rate) * 32767).astype(np.int16), MAX_AUDIO_SECONDS + 5)
    clip = load_audio((rate, samples))
    assert clip.truncated and clip.seconds == pytest.approx(MAX_AUDIO_SECONDS)
    assert [note.key for note in clip.notes] == ["audio_truncated"]
    assert f"first {MAX_AUDIO_SECONDS} s" in str(clip.notes[0])


def test_long_file_is_truncated_too(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, np.tile(speech_like(1.0, 8_000), MAX_AUDIO_SECONDS + 2), 8_000)
    clip = load_audio(str(path))
    assert clip.truncated and clip.seconds == pytest.approx(MAX_AUDIO_SECONDS)


def test_a_file_read_in_blocks_gives_what_the_whole_recording_gives(tmp_path, monkeypatch):
    """Files are decoded a block at a time. The waveform, its level notes and the truncation do not depend on where
    the blocks fall: the same samples given whole, as an array, give the same clip."""
    rate = 44_100
    wave = speech_like(1.5, rate, amplitude=3.0, channels=2)  # beyond full scale: scaled down
    wave[1000:1010] = np.nan
    path = tmp_path / "float.wav"
    sf.write(path, wave, rate, subtype="FLOAT")
    whole = load_audio((rate, wave))
    monkeypatch.setattr(inputs, "AUDIO_BLOCK_SAMPLES", 999)  # odd, so blocks split the recording anywhere
    blocks = load_audio(str(path))
    assert [str(note) for note in blocks.notes] == [str(note) for note in whole.notes]
    assert [note.key for note in blocks.notes] == ["audio_nonfinite", "audio_rescaled"]
    assert blocks.waveform.shape == whole.waveform.shape
    np.testing.assert_allclose(blocks.waveform, whole.waveform, atol=1e-4)


def test_a_file_resampled_in_blocks_is_as_long_as_the_same_samples_given_whole(tmp_path):
    """soxr's stream can end one sample before its one-shot call (LJ Speech's LJ001-0005 at 22.05 kHz: 129774
    against 129775); a file's clip keeps librosa's length, padded with silence, so its duration does not depend on
    whether it came as a file or as an array."""
    rate, frames = 22_050, 178_845
    wave = speech_like(frames / rate, rate)[:frames]
    path = tmp_path / "lj.wav"
    sf.write(path, wave, rate, subtype="FLOAT")
    whole, from_file = load_audio((rate, wave)), load_audio(str(path))
    assert from_file.waveform.shape == whole.waveform.shape == (int(np.ceil(frames * 16_000 / rate)),)
    np.testing.assert_allclose(from_file.waveform, whole.waveform, atol=1e-6)


def test_a_small_file_that_decodes_to_hundreds_of_megabytes_is_read_in_little_memory(tmp_path):
    """10 s of 8 channels at 384 kHz is 7 MB of FLAC and 123 MB of float32 samples; 600 s would be 7 GB."""
    import tracemalloc

    rate, channels, seconds = 384_000, 8, 10
    path = tmp_path / "wide.flac"
    with sf.SoundFile(path, "w", rate, channels, format="FLAC") as out:
        for _ in range(seconds):
            out.write(speech_like(1.0, rate, channels=channels))
    tracemalloc.start()
    try:
        clip = load_audio(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert clip.seconds == pytest.approx(seconds, abs=0.01) and not clip.truncated
    assert peak < 48e6, f"decoding took {peak / 1e6:.0f} MB at its peak"


@pytest.mark.parametrize("suffix, fmt", [("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")])
def test_soundfile_formats(tmp_path, suffix, fmt):
    path = tmp_path / f"clip.{suffix}"
    sf.write(path, speech_like(1.0), SAMPLE_RATE, format=fmt)
    assert load_audio(str(path)).seconds == pytest.approx(1.0, abs=0.1)


def test_gradio_file_payload(tmp_path):
    assert load_audio({"path": str(wav(tmp_path / "payload.wav"))}).seconds == pytest.approx(1.0)


# --- text -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t \n", "\x00\x01\x02", "\r\n\x0b\x0c"])
def test_empty_prompt_is_refused(text):
    with pytest.raises(InputError) as caught:
        clean_prompt(text)
    assert caught.value.key == "prompt_empty" and "empty" in str(caught.value)
    assert clean_prompt("next prompt works")[0] == "next prompt works"


def test_control_characters_and_nul_are_removed_newline_and_tab_kept():
    text, notes = clean_prompt("a\x00b\x07c\nd\te\x1b[31m\r\nf")
    assert text == "abc\nd\te[31m\nf"
    assert [note.key for note in notes] == ["prompt_control_removed"] and "3 control" in str(notes[0])


@pytest.mark.parametrize("text", ["مرحبا بالعالم", "שלום עולם", "你好，世界！今天天气很好。", "family 👨‍👩‍👧 and flags 🇨🇳🇬🇧",
                                  "mixed: hello مرحبا 你好 😀"])
def test_rtl_chinese_and_emoji_are_kept(text):
    assert clean_prompt(text) == (text, [])


def test_long_prompt_keeps_the_end_and_says_so():
    text, notes = clean_prompt("x" * 10 + " the end", max_chars=8)
    assert text == "the end"
    assert [note.key for note in notes] == ["prompt_trimmed"] and "last 8" in str(notes[0])


def test_optional_text_may_be_empty():
    assert clean_prompt("  ", required=False) == ("", [])


@pytest.mark.parametrize("value, integer, message", [("abc", False, "must be a number"), (float("nan"), False, "nan"),
                                                     (1.5, True, "whole number"), (True, True, "True"),
                                                     (None, False, "nothing")])
def test_crafted_numbers_are_refused(value, integer, message):
    with pytest.raises(InputError, match=message):
        inputs.parse_number(value, "top_k", integer=integer)
    assert inputs.parse_number("7", "top_k", integer=True) == 7
    assert inputs.parse_number("", "seed", integer=True, optional=True) is None


def test_unknown_choice_lists_the_choices():
    with pytest.raises(InputError, match="Choose one of: a, b"):
        inputs.check_choice("../../etc/passwd", ["a", "b"], "preset_unknown")


# --- messages -------------------------------------------------------------------------------------------------------


def test_every_message_has_both_languages_and_the_same_placeholders():
    import string

    for key, english in TRANSLATIONS["en"].items():
        chinese = TRANSLATIONS["zh-CN"][key]
        assert chinese, key
        if english != "{detail}":  # the English text is the engine's own message
            fields = {name for _, name, _, _ in string.Formatter().parse(english) if name}
            assert fields == {name for _, name, _, _ in string.Formatter().parse(chinese) if name}, key


def test_messages_translate():
    error = pytest.raises(InputError, load_image, None).value
    assert error.message.text("zh-CN") == translate("image_missing", "zh-CN") and "图片" in error.message.text("zh")
    assert error.message.text("fr-FR") == str(error)


def test_every_key_the_code_uses_has_a_translation():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r'(?:translate|InputError|Message|I18N)\(\s*"([a-z_]+)"|"([a-z]+_unknown)"')
    used = set()
    for path in (root / "app.py", *sorted((root / "mmgpt").rglob("*.py"))):
        for match in pattern.finditer(path.read_text()):
            used.add(match.group(1) or match.group(2))
    assert {"image_missing", "stats_line", "preset_unknown", "tab_image"} <= used
    assert used <= set(TRANSLATIONS["en"]), used - set(TRANSLATIONS["en"])

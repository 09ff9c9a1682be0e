"""Pictures and widget values that show an `explain.Explanation`: heatmaps over the image, attention under the
spectrogram, and token confidences. numpy, PIL and matplotlib (Agg, no pyplot: safe from worker threads) only.

Wiring in Gradio, e.g. for the image tab:
    explanation = explain(adapter, request, text)
    gr.Radio(choices=word_choices(explanation.image_maps))           # value: the word's index
    on select: heatmap_overlay(image, explanation.image_maps[index].grid)
and for the text tab:
    gr.HighlightedText(confidence_spans(explanation.tokens), color_map=CONFIDENCE_COLOURS)
    on select (evt.index): gr.Label(alternatives(explanation.tokens[evt.index]))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from .audio import HOP_LENGTH, N_MELS, SAMPLE_RATE, log_mel_spectrogram
from .figures import DPI, MAX_COLUMNS, _mel_ticks, _pool_columns, figure_image

DISPLAY_PIXELS = 256  # longest side of a heatmap overlay; scenes are 64x64, so they show 4x
HEATMAP_ALPHA = 0.6  # opacity of the heatmap where attention is highest; it fades out where attention is low
HEATMAP_COLORMAP = "inferno"
SPECTROGRAM_INCHES = (8.0, 3.4)  # width, height of the spectrogram + attention figure
ATTENTION_COLOUR = "#1f77b4"
CONFIDENCE_LEVELS = ((0.8, "sure"), (0.4, "unsure"), (0.0, "guess"))  # (lowest probability, category)
TOP_ALTERNATIVES = 5  # alternatives a gr.Label shows for a selected token (explain.TOP_K gives as many)
CONFIDENCE_COLOURS = {"sure": "#2ca02c", "unsure": "#ff7f0e", "guess": "#d62728"}  # gr.HighlightedText color_map


def heatmap_overlay(image: Image.Image, grid: np.ndarray, size: int = DISPLAY_PIXELS) -> Image.Image:
    """`image` scaled so its longest side is `size` pixels, with the attention `grid` `(rows, cols)` (row-major
    over the image as the model saw it, stretched to the image's shape) smoothly upsampled, coloured and blended
    over it. Returns RGB."""
    from matplotlib import colormaps

    grid = np.asarray(grid, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"grid must be a non-empty 2-D array, got shape {grid.shape}")
    scale = size / max(image.size)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    base = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)

    heat = Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, None)
    heat = heat / heat.max() if heat.max() > 0 else heat  # (height, width) in [0, 1]
    colours = colormaps[HEATMAP_COLORMAP](heat)[..., :3] * 255.0
    alpha = (HEATMAP_ALPHA * np.sqrt(heat))[..., None]  # low attention lets the picture show through
    blended = (1.0 - alpha) * base + alpha * colours
    return Image.fromarray(np.clip(blended, 0, 255).round().astype(np.uint8), "RGB")


def spectrogram_with_attention(audio: np.ndarray, curve: np.ndarray | None = None,
                               seconds_per_step: float | None = None, word: str | None = None) -> Image.Image:
    """The log-mel spectrogram of `audio` (a 16 kHz waveform `(n_samples,)` or log-mel `(N_MELS, n_frames)`) with
    time (s) and frequency (Hz) axes and, when `curve` `(n_steps,)` is given, a panel under it on the same time
    axis with the attention of `word` over time (step i covers `[i, i + 1) * seconds_per_step`). Returns RGB."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        features = log_mel_spectrogram(audio)
        seconds = len(audio) / SAMPLE_RATE
    elif audio.ndim == 2 and audio.shape[0] == N_MELS:
        features = audio
        seconds = audio.shape[1] * HOP_LENGTH / SAMPLE_RATE
    else:
        raise ValueError(f"expected a waveform (n_samples,) or log-mel ({N_MELS}, n_frames), got {audio.shape}")
    seconds = max(seconds, HOP_LENGTH / SAMPLE_RATE)

    figure = Figure(figsize=SPECTROGRAM_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    if curve is None:
        spectrogram = figure.add_subplot()
    else:
        spectrogram, attention = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    spectrogram.imshow(_pool_columns(features, MAX_COLUMNS), origin="lower", aspect="auto", cmap="magma",
                       interpolation="nearest", extent=(0.0, seconds, 0, N_MELS), vmin=-1.0, vmax=1.5)
    bins, labels = _mel_ticks()
    spectrogram.set_yticks(bins, labels)
    spectrogram.set_ylabel("frequency (Hz)")
    spectrogram.set_xlim(0.0, seconds)
    if curve is None:
        spectrogram.set_xlabel("time (s)")
    else:
        if not seconds_per_step or seconds_per_step <= 0:
            raise ValueError(f"seconds_per_step must be positive with a curve, got {seconds_per_step!r}")
        weights = np.asarray(curve, dtype=np.float32).reshape(-1)
        edges = np.arange(len(weights) + 1) * seconds_per_step
        attention.stairs(weights, edges, fill=True, color=ATTENTION_COLOUR, alpha=0.7)
        peak = (int(np.argmax(weights)) + 0.5) * seconds_per_step
        for axes in (spectrogram, attention):
            axes.axvline(peak, color="white" if axes is spectrogram else "black", linestyle="--", linewidth=1)
        attention.set_ylim(0, max(float(weights.max()), 1e-6) * 1.1)
        attention.set_yticks([])
        attention.set_ylabel("attention")
        attention.set_xlabel("time (s)")
        attention.set_title(f"“{word}” peaks at {peak:.2f} s" if word else f"peak at {peak:.2f} s", fontsize=9)
    return figure_image(figure)


def confidence_category(prob: float) -> str:
    for lowest, name in CONFIDENCE_LEVELS:
        if prob >= lowest:
            return name
    return CONFIDENCE_LEVELS[-1][1]


def confidence_spans(token_infos: Sequence, categories: bool = True) -> list[tuple[str, str | float]]:
    """`gr.HighlightedText` value: one (text, label) per token, in order. With `categories`, the label is "sure",
    "unsure" or "guess" (colour them with `CONFIDENCE_COLOURS`); otherwise it is the probability in [0, 1], which
    HighlightedText shades by intensity."""
    return [(info.text, confidence_category(info.prob) if categories else round(float(info.prob), 4))
            for info in token_infos]


def alternatives(token_info) -> dict[str, float]:
    """`gr.Label` value for one token: its top alternatives and their probabilities (spaces shown as "␣"). Tokens
    that look alike (pieces of one multi-byte character all show as "∅") are numbered, so none is lost."""
    shown: dict[str, float] = {}
    for text, prob in token_info.top5:
        label, repeat = _visible(text), 1
        while label in shown:
            repeat += 1
            label = f"{_visible(text)} ({repeat})"
        shown[label] = float(prob)
    return shown


def _visible(text: str) -> str:
    return text.replace(" ", "␣").replace("\n", "⏎") or "∅"


def word_choices(word_items: Sequence | None) -> list[tuple[str, int]]:
    """`gr.Radio` / `gr.Dropdown` choices (label, index) for a list of `WordMap` or `WordCurve`; a repeated word
    gets its occurrence number, e.g. "a (2)"."""
    seen: dict[str, int] = {}
    choices = []
    for index, item in enumerate(word_items or []):
        seen[item.word] = seen.get(item.word, 0) + 1
        choices.append((item.word if seen[item.word] == 1 else f"{item.word} ({seen[item.word]})", index))
    return choices

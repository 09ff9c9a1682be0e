"""Pictures for the UI, drawn with matplotlib's Agg backend (no pyplot, so it is safe from worker threads)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .audio import HOP_LENGTH, N_MELS, SAMPLE_RATE, log_mel_spectrogram

MAX_COLUMNS = 2_000  # frames drawn at most; longer recordings are averaged down to this many columns
FIGURE_INCHES = (8.0, 2.6)  # width, height
DPI = 100
FREQUENCY_TICKS_HZ = (0, 250, 500, 1000, 2000, 4000, 8000)


def spectrogram_image(waveform: np.ndarray) -> Image.Image:
    """The log-mel spectrogram of a mono 16 kHz `waveform` `(n_samples,)`, as the model hears it, with time (s)
    and frequency (Hz, on the mel scale) axes. Returns an RGB picture of `FIGURE_INCHES * DPI` pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    features = log_mel_spectrogram(waveform)  # (N_MELS, n_frames)
    seconds = len(waveform) / SAMPLE_RATE
    features = _pool_columns(features, MAX_COLUMNS)

    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    shown = axes.imshow(features, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                        extent=(0.0, max(seconds, 1.0 / SAMPLE_RATE * HOP_LENGTH), 0, N_MELS), vmin=-1.0, vmax=1.5)
    bins, labels = _mel_ticks()
    axes.set_yticks(bins, labels)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("frequency (Hz)")
    figure.colorbar(shown, ax=axes, label="log power", pad=0.01)
    return figure_image(figure)


def figure_image(figure) -> Image.Image:
    """An Agg-backed matplotlib `figure` as an RGB picture, read straight from its canvas: the same pixels as
    saving it as PNG and reading that back, at half the CPU (the app encodes the picture once more to send it)."""
    canvas = figure.canvas
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def _pool_columns(features: np.ndarray, max_columns: int) -> np.ndarray:
    """Average groups of frames so that at most `max_columns` remain: `(N_MELS, n)` -> `(N_MELS, <= max_columns)`."""
    frames = features.shape[1]
    if frames <= max_columns:
        return features
    group = -(-frames // max_columns)  # ceil
    padded = np.pad(features, ((0, 0), (0, group * max_columns - frames)), mode="edge")
    return padded.reshape(features.shape[0], max_columns, group).mean(axis=2)[:, : -(-frames // group)]


def _mel_ticks() -> tuple[list[float], list[str]]:
    """Positions on the mel-bin axis of `FREQUENCY_TICKS_HZ`, for labelling it in Hz."""
    import librosa

    centres = librosa.mel_frequencies(n_mels=N_MELS + 2, fmin=0.0, fmax=SAMPLE_RATE / 2)[1:-1]  # Hz of each bin
    positions = np.interp(FREQUENCY_TICKS_HZ, centres, np.arange(N_MELS) + 0.5)
    labels = [f"{hz // 1000}k" if hz >= 1000 else str(hz) for hz in FREQUENCY_TICKS_HZ]
    return [float(p) for p in positions], labels

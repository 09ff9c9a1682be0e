"""Audio constants and log-mel features: the one place that says what the models hear.

Shapes: a waveform is float32 `(n_samples,)` at `SAMPLE_RATE`; features are float32 `(N_MELS, n_frames)`.
"""

import numpy as np

SAMPLE_RATE = 16_000  # Hz; everything is resampled to this before featurizing
N_FFT = 400  # samples in one STFT window (25 ms)
HOP_LENGTH = 160  # samples between frames (10 ms), so 100 frames per second
N_MELS = 80  # mel bins
LOG_FLOOR = -8.0  # log10 power below which everything counts as silence
SILENCE_FEATURE = (LOG_FLOOR + 4.0) / 4.0  # what log_mel_spectrogram gives for digital silence; pads audio


def frames_for_samples(n_samples: int) -> int:
    """Number of feature frames `log_mel_spectrogram` returns for `n_samples` samples (librosa centres frames)."""
    return 1 + n_samples // HOP_LENGTH


def to_mono_16k(waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Mix `(n_samples,)` or `(n_samples, n_channels)` audio down to mono and resample it to `SAMPLE_RATE`."""
    import librosa

    audio = np.asarray(waveform, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"expected audio of shape (samples,) or (samples, channels), got {audio.shape}")
    if sampling_rate != SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=sampling_rate, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)


def log_mel_spectrogram(waveform: np.ndarray) -> np.ndarray:
    """Log-mel features of a mono 16 kHz waveform, scaled to roughly [-1, 1.5]: `(N_MELS, n_frames)`.

    The scaling is fixed rather than relative to each clip's peak, so silence stays silent instead of
    having its noise floor stretched up to look like speech.
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(waveform, dtype=np.float32), sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
        n_mels=N_MELS, power=2.0,
    )
    log_mel = np.maximum(np.log10(np.maximum(mel, 1e-10)), LOG_FLOOR)
    return ((log_mel + 4.0) / 4.0).astype(np.float32)

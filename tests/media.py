"""Pictures and recordings the app tests send: a scene drawn in a few lines, and speech from espeak-ng."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image


def scene_png(path: Path, color=(220, 40, 40)) -> Path:
    image = Image.new("RGB", (64, 64), (120, 120, 110))
    image.paste(color, (16, 16, 40, 40))
    image.save(path)
    return path


def speech_wav(path: Path, text: str = "a small red circle at the top left", voice: str = "en-us") -> Path:
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, timeout=30)
    else:  # a tone with syllable-like bursts
        t = np.arange(16_000) / 16_000
        sf.write(path, (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32),
                 16_000)
    return path

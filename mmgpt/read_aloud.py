"""Answers read aloud, offline, with espeak-ng (a Debian package; `packages.txt` gives a Space the same).

`speak(text)` -> `(sample_rate, int16 samples)`, what `gr.Audio` plays. The text goes to espeak-ng on stdin, so it
can never be taken for a command-line option, and the WAV comes back on stdout: no files, no shell.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess

import numpy as np

from .data.speech import ESPEAK, _parse_espeak_wav
from .inputs import InputError, clean_prompt

logger = logging.getLogger(__name__)

MAX_READ_ALOUD_CHARS = 1_000  # characters read at most; an answer is far shorter
ESPEAK_TIMEOUT_S = 20  # wall-clock limit on one synthesis (a 1,000-character text takes well under a second)
ENGLISH_VOICE, CHINESE_VOICE = "en-us", "cmn"  # espeak-ng voices: the answer's script picks one, not the page's
READING_SPEED_WPM = 160
CHINESE_CHARACTERS = re.compile(r"[\u3400-\u9fff]")


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def speak(text: str) -> tuple[int, np.ndarray]:
    """`text` spoken: `(sample_rate, int16 samples (n,))`. Text with Chinese characters is read by the Mandarin
    voice, any other by the English one; only its first `MAX_READ_ALOUD_CHARS` characters are read.
    Raises `InputError` when there is nothing to read or espeak-ng is missing."""
    text, _ = clean_prompt(text, max_chars=10 * MAX_READ_ALOUD_CHARS, required=False)
    text = text[:MAX_READ_ALOUD_CHARS].strip()
    if not text:
        raise InputError("read_aloud_nothing")
    if not espeak_available():
        logger.warning("reading aloud asked for, but %s is not installed", ESPEAK)
        raise InputError("read_aloud_unavailable")
    voice = CHINESE_VOICE if CHINESE_CHARACTERS.search(text) else ENGLISH_VOICE
    result = subprocess.run([ESPEAK, "-v", voice, "-s", str(READING_SPEED_WPM), "--stdout", "--stdin"],
                            input=text.encode(), capture_output=True, timeout=ESPEAK_TIMEOUT_S, check=False)
    if result.returncode != 0 or not result.stdout:
        logger.warning("%s -v %s failed (exit code %d)", ESPEAK, voice, result.returncode)
        raise RuntimeError(f"{ESPEAK} failed with exit code {result.returncode}")
    samples, sample_rate = _parse_espeak_wav(result.stdout)
    return sample_rate, np.ascontiguousarray(samples)

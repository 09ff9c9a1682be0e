"""Tiny Shakespeare, the text corpus. It lives outside the repository and is never copied into it."""

import os
from pathlib import Path

CORPUS_RELATIVE_PATH = Path("text") / "tinyshakespeare.txt"  # inside the data dir
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data from the repo
TRAIN_FRACTION = 0.9  # nanoGPT's split: the first 90% of characters train, the last 10% validate


def default_corpus_path() -> Path:
    """`$MMGPT_DATA_DIR/text/tinyshakespeare.txt`, else `../shared/data/text/tinyshakespeare.txt`."""
    data_dir = os.environ.get("MMGPT_DATA_DIR")
    return (Path(data_dir) if data_dir else DEFAULT_DATA_DIR) / CORPUS_RELATIVE_PATH


def load_shakespeare(path: str | Path | None = None) -> str:
    """The whole corpus as one string (about 1.1 M characters)."""
    path = Path(path) if path is not None else default_corpus_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"Tiny Shakespeare not found at {path}. CI has it at ../shared/data/text/tinyshakespeare.txt "
            f"next to the repository; set MMGPT_DATA_DIR to a data dir holding text/tinyshakespeare.txt, "
            f"or pass the file's path."
        )
    return path.read_text(encoding="utf-8")


def split_text(text: str) -> tuple[str, str]:
    """(train, validation): the first 90% of the characters and the last 10%."""
    n_train = int(len(text) * TRAIN_FRACTION)
    return text[:n_train], text[n_train:]

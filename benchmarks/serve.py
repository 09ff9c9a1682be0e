"""`python -m benchmarks.serve --model DIR`: `python app.py`, with the mmgpt-tiny preset pointed at DIR.

What `app.py`'s `__main__` does, step for step, so that a benchmark of a checkpoint other than assets/mmgpt-tiny
(a random one of the same sizes, a training run's) measures the same app. The port comes from GRADIO_SERVER_PORT.
"""

import argparse
import dataclasses
import logging
import os
from pathlib import Path

import app
from mmgpt.presets import PRESETS

PRESET = "mmgpt-tiny"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="mmgpt checkpoint directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("MMGPT_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    preset = dataclasses.replace(PRESETS[PRESET], source=str(args.model.resolve()))
    app.build_demo(app.make_engine({**PRESETS, PRESET: preset})).launch(**app.launch_kwargs())


if __name__ == "__main__":
    main()

"""Speech-only ablation: train a fresh mmgpt-tiny on transcription alone for a few hundred steps, then score it.

Decides training settings quickly (minutes, not a 90-minute run): each run changes `TrainConfig` fields given on
the command line and prints one JSON line with the last 50 steps' training loss and the WER (jiwer) on 64
validation utterances (training voices) and 64 clean held-out-voice utterances. Example, as run for mmgpt-tiny v3
(one thread each, two runs at a time):

    OMP_NUM_THREADS=1 python scripts/ablate_speech.py --steps 400 speech_window_batches=8
    OMP_NUM_THREADS=1 python scripts/ablate_speech.py --steps 400 speech_window_batches=8 mel_warp=0
    OMP_NUM_THREADS=1 python scripts/ablate_speech.py --steps 400 speech_window_batches=0
"""

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmgpt import train as training  # noqa: E402
from mmgpt.data import load_shakespeare, speech_dataset, split_text  # noqa: E402
from mmgpt.evaluate import transcription_scores  # noqa: E402
from mmgpt.model import MMGPTConfig, MMGPTForCausalLM, MMGPTProcessor, train_tokenizer  # noqa: E402

# this folder is on sys.path when a script runs
from ablate_questions import ablation_step  # noqa: E402

EVAL_UTTERANCES = 64


def settings(pairs: list[str], **base) -> training.TrainConfig:
    """`field=value` pairs over TrainConfig's defaults and the script's own `base`, each value parsed as its field's
    type: the command line has the last word."""
    defaults = training.TrainConfig(**{"warmup_steps": 50, **base})
    changes = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in {field.name for field in dataclasses.fields(defaults)}:
            raise SystemExit(f"unknown TrainConfig field {name!r}")
        changes[name] = type(getattr(defaults, name))(value)
    cfg = dataclasses.replace(defaults, **changes)
    return dataclasses.replace(cfg, precision=training.resolved_precision(cfg.precision))


def train_one_task(model, cfg: training.TrainConfig, next_batch) -> tuple[list[float], float]:
    """`cfg.steps` optimizer steps on `next_batch()` alone, on `train`'s schedule: (losses, seconds)."""
    optimizer = training.make_optimizer(model, cfg)
    started, losses = time.time(), []
    model.train()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = training.learning_rate(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss = model(**next_batch()).loss
        ablation_step(model, optimizer, loss, cfg.grad_clip)
        losses.append(loss.item())
    return losses, time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("changes", nargs="*", help="TrainConfig fields, e.g. mel_warp=0")
    args = parser.parse_args()
    cfg = dataclasses.replace(settings(args.changes), steps=args.steps)

    torch.manual_seed(cfg.seed)
    train_text, _ = split_text(load_shakespeare(cfg.text_path))
    tokenizer = train_tokenizer(training.tokenizer_corpus(train_text, cfg.seed), cfg.vocab_size)
    config = MMGPTConfig(
        vocab_size=len(tokenizer), n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, dropout=cfg.dropout,
        image_layers=cfg.image_layers, image_stem_layers=cfg.image_stem_layers,
        image_position_std=cfg.image_position_std, audio_layers=cfg.audio_layers, n_positions=cfg.n_positions,
        image_size=cfg.image_size, patch_size=cfg.patch_size, max_audio_frames=cfg.max_audio_frames,
    )
    model, processor = MMGPTForCausalLM(config), MMGPTProcessor.from_config(config, tokenizer)
    batches = training.TaskBatches(cfg, processor, train_text, seed=1, pool_seed=cfg.seed * 1000)

    losses, train_seconds = train_one_task(model, cfg, batches.transcribe)

    model.eval()
    validation = speech_dataset("validation", EVAL_UTTERANCES, 7, cfg.speech_cache_dir)
    held_out = speech_dataset("test", EVAL_UTTERANCES, 1234, cfg.speech_cache_dir, snr_db=math.inf)
    print(json.dumps({
        "changes": args.changes, "steps": cfg.steps, "train_s": round(train_seconds),
        "train_loss_last50": float(np.mean(losses[-50:])),
        "validation_wer": transcription_scores(model, processor, validation, 32)["wer"],
        "held_out_wer": transcription_scores(model, processor, held_out, 32)["wer"],
    }))


if __name__ == "__main__":
    main()

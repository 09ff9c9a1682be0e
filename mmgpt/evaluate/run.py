"""The whole evaluation: `evaluate` loads a checkpoint, measures every figure on held-out data, prints the table
and writes the JSON; with the figures that need no other module (text nats/char, decode speed, checkpoint size)."""

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .captions import caption_scores
from .common import EvalSizes
from .questions import question_scores
from .report import format_table
from .speech import other_voice_scores, per_voice_scores, speech_set_phrases, transcription_scores


def text_nats_per_char(model, processor, text: str, windows: int, block: int) -> float:
    """Summed next-token NLL over evenly spaced windows of `text`, divided by the characters those tokens span."""
    tokenizer = processor.tokenizer
    ids = tokenizer.encode(text, add_special_tokens=False)
    starts = np.linspace(0, len(ids) - block - 1, windows).astype(int)
    marker = processor.token_ids["<|text|>"]
    total_nll, total_chars = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in starts:
            window = ids[start:start + block]
            input_ids = torch.tensor([[marker] + window])
            logits = model(input_ids=input_ids).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, input_ids[0, 1:], reduction="sum")
            total_nll += nll.item()
            total_chars += len(tokenizer.decode(window))
    return total_nll / total_chars


def decode_tokens_per_second(model, processor, new_tokens: int = 64) -> float:
    """Greedy decode speed, batch 1, from a short text prompt, forcing `new_tokens` tokens."""
    inputs = processor(text="ROMEO:")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=4, do_sample=False)  # warm-up
        start = time.perf_counter()
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return new_tokens / (time.perf_counter() - start)


def checkpoint_megabytes(model_dir: str | Path) -> float:
    """MiB of the files that ship (weights, configs, tokenizer), as the shipped-model test counts them."""
    from ..ship import SHIPPED_FILES

    return sum((Path(model_dir) / name).stat().st_size for name in SHIPPED_FILES
               if (Path(model_dir) / name).is_file()) / 2**20


def evaluate(model_dir: str, text_path: str | None, out_json: str | None, sizes: EvalSizes = EvalSizes(),
             seed: int = 1234, cache_dir: str | None = None) -> dict:
    from transformers import AutoModelForCausalLM, AutoProcessor

    from ..data import load_shakespeare, scene_dataset, speech_dataset, split_text
    from ..data.heldout import heldout_drawings
    from ..data.scenes import example_captions
    from ..ship import weights_sha256

    started = time.perf_counter()
    digest = weights_sha256(model_dir)  # of the bytes about to be loaded, whatever happens to the file later
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    _, validation_text = split_text(load_shakespeare(text_path))
    test_scenes = scene_dataset("test", sizes.scenes, seed)
    drawings = heldout_drawings(sizes.scenes, seed)
    heldout_scenes = [d.scene for d in drawings]
    results = {
        "model": str(model_dir), "seed": seed, "sizes": asdict(sizes),
        "text_nats_per_char": text_nats_per_char(model, processor, validation_text, sizes.text_windows,
                                                 sizes.text_block),
        "caption_test": caption_scores(model, processor, test_scenes, sizes.batch),
        "caption_heldout": caption_scores(model, processor, heldout_scenes, sizes.batch, object_groups={
            "background": [[d.background.split(",")[0]] * len(d.styles) for d in drawings],
            "finish": [[d.background.split(", ")[1]] * len(d.styles) for d in drawings],
            "style": [list(d.styles) for d in drawings],
        }),
        "caption_compositional": caption_scores(
            model, processor, scene_dataset("compositional", sizes.scenes, seed), sizes.batch),
        "caption_heldout_big": caption_scores(
            model, processor, [d.scene for d in heldout_drawings(sizes.scenes, seed, big=True)], sizes.batch),
    }
    for key, snr in (("speech_clean", math.inf), ("speech_10db", 10.0)):
        utterances = speech_dataset("test", sizes.utterances, seed, cache_dir, snr_db=snr)
        results[key] = transcription_scores(model, processor, utterances, sizes.batch, groups={
            "voice": [u.voice for u in utterances], "kind": [u.kind for u in utterances]})
    captions = [c.replace(",", "") for c in example_captions(sizes.per_voice, seed, split="test")]
    results["speech_captions"] = per_voice_scores(model, processor, captions, seed, cache_dir, sizes.batch)
    results["speech_phrases"] = speech_set_phrases(model, processor, sizes.per_voice * 3, seed, cache_dir,
                                                   sizes.batch)
    from ..data.heldout import heldout_phrases
    from ..data.speech import free_phrase

    unheard_phrases = heldout_phrases(sizes.per_voice, seed)
    results["speech_phrases_heldout"] = per_voice_scores(model, processor, unheard_phrases, seed, cache_dir,
                                                         sizes.batch)
    phrases = random.Random(seed)
    results.update(other_voice_scores(model, processor, {
        "speech_captions_other_voices": captions,
        "speech_phrases_other_voices": [free_phrase(phrases) for _ in range(sizes.per_voice)],
        "speech_phrases_heldout_other_voices": unheard_phrases,
    }, seed, cache_dir, sizes.batch))
    results.update(question_scores(model, processor, test_scenes, heldout_scenes, sizes, seed, cache_dir))
    results["checkpoint_mb"] = checkpoint_megabytes(model_dir)
    results["weights_sha256"] = digest
    results["decode_tokens_per_s"] = decode_tokens_per_second(model, processor)
    results["eval_seconds"] = time.perf_counter() - started
    print(format_table(results))
    if out_json:
        Path(out_json).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results

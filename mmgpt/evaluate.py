"""Held-out metrics for mmgpt: text nats/char, caption exact match and BLEU, speech WER, decode speed.

`python -m mmgpt evaluate --model assets/mmgpt-tiny` prints the table and writes JSON. Every metric is computed
on data the training never saw: the last 10% of Tiny Shakespeare, freshly drawn test and compositional scenes,
and utterances in held-out voices.
"""

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import sacrebleu
import torch

from .audio import SAMPLE_RATE


@dataclass(frozen=True)
class EvalSizes:
    text_windows: int = 200  # validation windows of `text_block` tokens
    text_block: int = 256
    scenes: int = 500  # per scene split
    utterances: int = 300  # per SNR condition
    batch: int = 50


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


def greedy_texts(model, processor, batches, max_new_tokens: int) -> list[str]:
    """Greedy answers for an iterable of processor batches."""
    outputs = []
    model.eval()
    with torch.no_grad():
        for inputs in batches:
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new_tokens = generated[:, inputs["input_ids"].shape[1]:]
            outputs += [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return outputs


def caption_scores(model, processor, scenes, batch: int = 50) -> dict:
    """Exact match (%) and corpus BLEU of greedy captions against each scene's canonical caption."""
    batches = (processor(images=[s.image for s in scenes[i:i + batch]]) for i in range(0, len(scenes), batch))
    hypotheses = greedy_texts(model, processor, batches, max_new_tokens=40)
    references = [s.caption for s in scenes]
    exact = 100.0 * np.mean([h == r for h, r in zip(hypotheses, references)])
    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    return {"exact_match": float(exact), "bleu": float(bleu), "n": len(scenes), "examples": list(zip(
        references[:3], hypotheses[:3]))}


def transcription_scores(model, processor, utterances, batch: int = 50) -> dict:
    """Word error rate (%) of greedy transcripts against the spoken text."""
    batches = (
        processor(audio=[u.waveform for u in utterances[i:i + batch]], sampling_rate=SAMPLE_RATE)
        for i in range(0, len(utterances), batch)
    )
    hypotheses = greedy_texts(model, processor, batches, max_new_tokens=40)
    references = [u.transcript for u in utterances]
    wer = 100.0 * jiwer.wer(references, [h if h else "<empty>" for h in hypotheses])
    return {"wer": float(wer), "n": len(utterances), "examples": list(zip(references[:3], hypotheses[:3]))}


def decode_tokens_per_second(model, processor, new_tokens: int = 64) -> float:
    """Greedy decode speed, batch 1, from a short text prompt, forcing `new_tokens` tokens."""
    inputs = processor(text="ROMEO:")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=4, do_sample=False)  # warm-up
        start = time.perf_counter()
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return new_tokens / (time.perf_counter() - start)


def evaluate(model_dir: str, text_path: str | None, out_json: str | None, sizes: EvalSizes = EvalSizes(),
             seed: int = 1234, cache_dir: str | None = None) -> dict:
    from transformers import AutoModelForCausalLM, AutoProcessor

    from .data import load_shakespeare, scene_dataset, speech_dataset, split_text

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    _, validation_text = split_text(load_shakespeare(text_path))
    results = {
        "model": str(model_dir),
        "text_nats_per_char": text_nats_per_char(model, processor, validation_text, sizes.text_windows,
                                                 sizes.text_block),
        "caption_test": caption_scores(model, processor, scene_dataset("test", sizes.scenes, seed), sizes.batch),
        "caption_compositional": caption_scores(
            model, processor, scene_dataset("compositional", sizes.scenes, seed), sizes.batch),
        "speech_clean": transcription_scores(
            model, processor, speech_dataset("test", sizes.utterances, seed, cache_dir, snr_db=math.inf),
            sizes.batch),
        "speech_10db": transcription_scores(
            model, processor, speech_dataset("test", sizes.utterances, seed, cache_dir, snr_db=10.0), sizes.batch),
        "decode_tokens_per_s": decode_tokens_per_second(model, processor),
    }
    print(format_table(results))
    if out_json:
        Path(out_json).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results


# nanoGPT's published Tiny Shakespeare validation losses, for the model card's comparison column.
REFERENCE_TEXT_NATS = {"nanoGPT baby GPT (CPU, 0.8M)": 1.88, "nanoGPT shakespeare_char (GPU, 10.7M)": 1.4697}
TARGETS = {
    "text_nats_per_char": ("<=", 1.80),
    "caption_test.exact_match": (">=", 90.0),
    "caption_compositional.exact_match": (">=", 60.0),
    "speech_clean.wer": ("<=", 10.0),
    "speech_10db.wer": ("<=", 25.0),
}


def _lookup(results: dict, dotted: str):
    value = results
    for part in dotted.split("."):
        value = value[part]
    return value


def format_table(results: dict) -> str:
    rows = [("metric", "value", "target", "met")]
    for key, (op, target) in TARGETS.items():
        value = _lookup(results, key)
        met = value <= target if op == "<=" else value >= target
        rows.append((key, f"{value:.3f}", f"{op} {target}", "yes" if met else "NO"))
    rows.append(("caption_test.bleu", f"{results['caption_test']['bleu']:.1f}", "", ""))
    rows.append(("caption_compositional.bleu", f"{results['caption_compositional']['bleu']:.1f}", "", ""))
    rows.append(("decode_tokens_per_s", f"{results['decode_tokens_per_s']:.1f}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)

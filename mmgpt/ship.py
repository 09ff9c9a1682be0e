"""Turn a training checkpoint into the shipped `assets/mmgpt-tiny/`: Hub-format files plus a model card.

    python -m mmgpt ship --checkpoint runs/mmgpt-tiny/checkpoint --eval eval.json --out assets/mmgpt-tiny

The model card's figures are read from the evaluate command's JSON and the checkpoint's own training state, so
the card says what was measured, never what was hoped.
"""

import json
import shutil
from pathlib import Path

import torch

from .data import TEST_VOICES, TRAIN_VOICES
from .evaluate import REFERENCE_TEXT_NATS, TARGETS, _lookup

SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "processor_config.json")
MAX_NEW_TOKENS = 64  # the shipped default; captions and transcripts need far fewer


def ship(checkpoint: str | Path, eval_json: str | Path, out: str | Path, command: str) -> Path:
    from transformers import GenerationConfig

    from .model import SPECIAL_TOKENS, MMGPTConfig

    checkpoint, out = Path(checkpoint), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        if (checkpoint / name).exists():
            shutil.copy2(checkpoint / name, out / name)
    config = MMGPTConfig.from_pretrained(checkpoint)
    # Markers and placeholders are inputs only; the end-of-text token (id 0) must stay sampleable.
    generation = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_new_tokens=MAX_NEW_TOKENS, suppress_tokens=list(range(1, len(SPECIAL_TOKENS))),
    )
    generation.save_pretrained(out)
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False, map_location="cpu")
    results = json.loads(Path(eval_json).read_text())
    n_params = sum(t.numel() for t in _safetensors(out / "model.safetensors").values())
    (out / "README.md").write_text(model_card(config, state, results, n_params, command))
    if Path(eval_json).resolve() != (out / "eval.json").resolve():  # the card's figures travel with the weights
        shutil.copyfile(eval_json, out / "eval.json")
    return out


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def _metric_rows(results: dict) -> str:
    rows = []
    names = {
        "text_nats_per_char": "Text: validation loss, nats/char (last 10% of Tiny Shakespeare)",
        "caption_test.exact_match": "Captions: exact match, % (test scenes)",
        "caption_compositional.exact_match": "Captions: exact match, % (compositional split, unseen colour+shape)",
        "speech_clean.wer": "Speech: WER, % (held-out voices, clean)",
        "speech_10db.wer": "Speech: WER, % (held-out voices, 10 dB SNR)",
    }
    for key, (op, target) in TARGETS.items():
        value = _lookup(results, key)
        met = value <= target if op == "<=" else value >= target
        rows.append(f"| {names[key]} | {value:.2f} | {op} {target} | {'yes' if met else 'no'} |")
    rows.append(f"| Captions: BLEU (test scenes) | {results['caption_test']['bleu']:.1f} | | |")
    rows.append(f"| Captions: BLEU (compositional) | {results['caption_compositional']['bleu']:.1f} | | |")
    rows.append(f"| Decode speed, tokens/s (batch 1, this 2-core CPU) | {results['decode_tokens_per_s']:.0f} | | |")
    return "\n".join(rows)


def _image_stem(config) -> str:
    if not config.image_stem_layers:
        return ""
    return f"a convolutional stem ({config.image_stem_layers} stride-2 3x3 convolutions, GELU), then "


def _mel_warp(train_cfg: dict) -> str:
    warp = train_cfg.get("mel_warp", 0.0)
    if not warp:
        return ""
    return f", each heard with its frequencies warped by a random factor within +/-{warp:.0%}"


def _batch_recipe(train_cfg: dict) -> str:
    notes = []
    if noise := train_cfg.get("colour_word_noise", 0.0):
        notes.append(f"In caption inputs each colour word is swapped for another colour with probability {noise} "
                     "(the labels keep the true colour), so the shape that follows must be read from the picture, "
                     "not guessed from the colour.")
    windows = train_cfg.get("speech_window_batches", 0)
    notes.append(f"Utterance batches are drawn from windows of {windows} batches' worth of clips of similar length."
                 if windows else "Utterance batches are drawn from the whole pool, whatever their lengths.")
    return "\n" + " ".join(notes)


def model_card(config, state: dict, results: dict, n_params: int, command: str) -> str:
    train_cfg = state["config"]
    minutes = state["train_seconds"] / 60
    references = "\n".join(f"| {name} | {value} |" for name, value in REFERENCE_TEXT_NATS.items())
    return f"""---
license: mit
language:
- en
library_name: transformers
pipeline_tag: image-text-to-text
tags:
- multimodal
- from-scratch
- tiny
- mmgpt
---

# mmgpt-tiny

A {n_params / 1e6:.1f}M-parameter multimodal GPT trained from scratch on a 2-core CPU. One decoder reads a
64x64 picture, up to {config.max_audio_frames // 100} s of 16 kHz speech, or text, and writes text. It is the
offline default of the mmgpt demo and loads with the Auto classes after `import mmgpt` (no remote code):

```python
import mmgpt  # registers the architecture with transformers
from transformers import AutoModelForCausalLM, AutoProcessor
model = AutoModelForCausalLM.from_pretrained("assets/mmgpt-tiny")
processor = AutoProcessor.from_pretrained("assets/mmgpt-tiny")
inputs = processor(images=image)            # or audio=waveform, sampling_rate=sr / text="ROMEO:"
print(processor.decode(model.generate(**inputs)[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

## Architecture
- **Decoder:** {config.n_layer} pre-LN causal blocks, width {config.n_embd}, {config.n_head} heads,
  `scaled_dot_product_attention`, GELU MLP, learned positions (context {config.n_positions}), tied embeddings.
- **Image encoder:** {_image_stem(config)}{config.patch_size}x{config.patch_size} patches of a
  {config.image_size}x{config.image_size} image ({config.num_patches} prefix tokens), learned 2-D (row + column)
  positions, {config.image_layers} bidirectional blocks.
- **Audio encoder:** 80-bin log-mel at 16 kHz (10 ms hop), two stride-2 Conv1d layers (one token per 40 ms),
  sinusoidal positions `PE(pos,2i)=sin(pos/10000^(2i/d))`, `PE(pos,2i+1)=cos(...)`, {config.audio_layers}
  bidirectional blocks.
- **Fusion:** `[modality marker][prefix tokens][task token][text]`, then causal generation.
- **Tokenizer:** byte-level BPE, {config.vocab_size} tokens, trained on the data below; any Unicode round-trips.

## Data
All made by the project (`mmgpt/data/`), deterministic given a seed:
- **Scenes:** 1 to 3 of 6 shapes in 8 colours and 2 sizes on varied, noisy backgrounds, with one canonical
  caption each ("a large red circle at the top left", "a small blue square above a large green star",
  three objects listed left to right). Eight colour+shape pairs never appear in training (compositional split).
- **Speech:** espeak-ng speaking scene captions, numbers 0-999 and 40 short commands in {len(TRAIN_VOICES)} training voices,
  130-200 wpm, varied pitch, white or pink noise at 10-30 dB SNR; {len(TEST_VOICES)} other voices are held out for
  testing. {train_cfg['speech_pool']} training utterances{_mel_warp(train_cfg)}.
- **Text:** Tiny Shakespeare, first 90% of characters (nanoGPT's split); the corpus is not redistributed here.

## Training
Every step sums the losses of three sub-batches: {train_cfg['text_batch']} text windows of
{train_cfg['text_block']} tokens, {train_cfg['image_batch']} captioned scenes and {train_cfg['audio_batch']}
utterances. AdamW (lr {train_cfg['lr']}, betas 0.9/0.95, weight decay {train_cfg['weight_decay']} on matrices),
{train_cfg['warmup_steps']} warmup steps then cosine decay to {train_cfg['min_lr']}, gradient clipping at
{train_cfg['grad_clip']}, dropout {train_cfg['dropout']}, {train_cfg.get('precision', 'fp32')} autocast, seed
{train_cfg['seed']}.{_batch_recipe(train_cfg)}

- Command: `{command}`
- Steps: {state['step']}; training wall time: {minutes:.1f} min on a 2-core CPU (evaluation pauses excluded),
  shared at times with other work on the same machine.

## Evaluation
`python -m mmgpt evaluate --model assets/mmgpt-tiny` on held-out data: {results['caption_test']['n']} fresh scenes
per split, {results['speech_clean']['n']} utterances in held-out voices per condition.

| metric | value | target | met |
|---|---|---|---|
{_metric_rows(results)}

Reference Tiny Shakespeare validation losses (nats/char, character-level models):

| model | nats/char |
|---|---|
{references}

mmgpt-tiny's tokens are BPE pieces, so its loss is summed over tokens and divided by the characters they cover,
which makes the figures comparable.

## Limits
- It knows synthetic shapes and synthetic voices, not photos or human speech: on a real photo it will still
  describe coloured shapes, and on a human voice it will answer with a caption, a number or a command.
- Its text is Shakespeare-flavoured pastiche from a 1 MB corpus; it cannot follow instructions or answer
  questions.
- Audio longer than {config.max_audio_frames // 100} s must be cut into windows (the demo's engine does this).
"""

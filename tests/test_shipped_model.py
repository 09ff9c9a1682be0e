"""The shipped checkpoint, `assets/mmgpt-tiny/`: complete, small, loadable offline through the Auto classes, and
right on fresh test scenes and held-out voices.

Set MMGPT_SHIPPED_MODEL=/path/to/checkpoint to run these checks on a candidate before copying it into assets/.
"""

import json
import os
import shutil
from pathlib import Path

import jiwer
import pytest
import torch
import yaml

import mmgpt  # noqa: F401  (registers mmgpt with the Auto classes: no trust_remote_code needed)
from mmgpt.audio import SAMPLE_RATE
from mmgpt.data import TEST_VOICES, TRAIN_VOICES, scene_dataset, speech_dataset
from mmgpt.presets import REPO_ROOT

SHIPPED_DIR = Path(os.environ.get("MMGPT_SHIPPED_MODEL") or REPO_ROOT / "assets" / "mmgpt-tiny")
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md")
MAX_TOTAL_MB = 40
FRESH_SEED = 20261125  # used nowhere in training or evaluation: these scenes and utterances are new to the model
TEST_SCENES = 20
MIN_CAPTION_EXACT_MATCH = 0.85
TEST_UTTERANCES = 10
MAX_CLEAN_WER = 0.15
MAX_NEW_TOKENS = 40

pytestmark = pytest.mark.skipif(not SHIPPED_DIR.is_dir(), reason="assets/mmgpt-tiny not shipped yet")


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

    offline = dict(local_files_only=True, trust_remote_code=False)
    config = AutoConfig.from_pretrained(SHIPPED_DIR, **offline)
    processor = AutoProcessor.from_pretrained(SHIPPED_DIR, **offline)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED_DIR, **offline).eval()
    return config, model, processor


def greedy(model, processor, **inputs) -> list[str]:
    batch = processor(**inputs, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    new_tokens = generated[:, batch["input_ids"].shape[1]:]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def test_shipped_directory_is_complete_and_small():
    for name in REQUIRED_FILES:
        assert (SHIPPED_DIR / name).is_file(), f"{name} is missing from {SHIPPED_DIR}"
    total_mb = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file()) / 2**20
    assert total_mb <= MAX_TOTAL_MB, f"{SHIPPED_DIR} holds {total_mb:.1f} MB; at most {MAX_TOTAL_MB} MB may ship"
    config = json.loads((SHIPPED_DIR / "config.json").read_text())
    assert config["model_type"] == "mmgpt"
    assert "auto_map" not in config, "the checkpoint must load without trust_remote_code"
    assert not (SHIPPED_DIR / "trainer_state.pt").exists(), "optimizer state does not ship"


def test_model_card_has_hub_metadata():
    card = (SHIPPED_DIR / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n"), "the model card starts with YAML front matter"
    front_matter, separator, body = card[4:].partition("\n---")
    assert separator, "the YAML front matter is not closed by ---"
    metadata = yaml.safe_load(front_matter)
    assert isinstance(metadata, dict) and "license" in metadata, metadata
    assert body.strip(), "the model card has no text after its metadata"


def test_loads_offline_through_the_auto_classes(shipped):
    config, model, processor = shipped
    from mmgpt.model import MMGPTConfig, MMGPTForCausalLM, MMGPTProcessor

    assert isinstance(config, MMGPTConfig)
    assert isinstance(model, MMGPTForCausalLM)
    assert isinstance(processor, MMGPTProcessor)
    assert processor.image_size == config.image_size and processor.max_audio_frames == config.max_audio_frames


def test_captions_fresh_test_scenes(shipped):
    _, model, processor = shipped
    scenes = scene_dataset("test", TEST_SCENES, seed=FRESH_SEED)
    captions = greedy(model, processor, images=[s.image for s in scenes])
    wrong = [(s.caption, c) for s, c in zip(scenes, captions) if c != s.caption]
    exact_match = 1 - len(wrong) / len(scenes)
    assert exact_match >= MIN_CAPTION_EXACT_MATCH, f"exact match {exact_match:.0%}; (expected, got): {wrong[:5]}"


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (apt-get install -y espeak-ng)")
def test_transcribes_held_out_voices(shipped, tmp_path):
    _, model, processor = shipped
    utterances = speech_dataset("test", TEST_UTTERANCES, seed=FRESH_SEED, cache_dir=tmp_path, snr_db=float("inf"))
    assert all(u.voice in TEST_VOICES and u.voice not in TRAIN_VOICES for u in utterances)
    transcripts = greedy(model, processor, audio=[u.waveform for u in utterances], sampling_rate=SAMPLE_RATE)
    references = [u.transcript for u in utterances]
    wer = jiwer.wer(references, [t or "<empty>" for t in transcripts])
    assert wer <= MAX_CLEAN_WER, f"WER {wer:.1%}; (expected, got): {list(zip(references, transcripts))[:5]}"

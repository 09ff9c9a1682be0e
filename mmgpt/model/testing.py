"""Tiny, randomly initialized mmgpt checkpoints for tests: the same files the shipped model has, in milliseconds."""

from pathlib import Path

import torch

from .configuration_mmgpt import MMGPTConfig
from .modeling_mmgpt import MMGPTForCausalLM
from .processing_mmgpt import MMGPTProcessor, train_tokenizer

TINY_CORPUS = (
    "a small red circle at the top left. a large blue square left of a small green star. "
    "ROMEO: But soft, what light through yonder window breaks? JULIET: O Romeo, Romeo! 0 1 2 3 4 5 6 7 8 9 "
    "你好，世界 😀"
)


def tiny_config(vocab_size: int, **overrides) -> MMGPTConfig:
    sizes = dict(n_embd=32, n_layer=2, n_head=4, n_positions=256, image_size=32, patch_size=8, image_layers=1,
                 audio_layers=1, max_audio_frames=400)
    return MMGPTConfig(vocab_size=vocab_size, **{**sizes, **overrides})


def tiny_model_and_processor(seed: int = 0, **overrides) -> tuple[MMGPTForCausalLM, MMGPTProcessor]:
    tokenizer = train_tokenizer([TINY_CORPUS] * 4, vocab_size=320)
    config = tiny_config(len(tokenizer), **overrides)
    torch.manual_seed(seed)
    return MMGPTForCausalLM(config).eval(), MMGPTProcessor.from_config(config, tokenizer)


def save_random_checkpoint(directory: str | Path, seed: int = 0, **overrides) -> Path:
    """Write a tiny random mmgpt (config, safetensors, tokenizer, processor) to `directory`."""
    directory = Path(directory)
    model, processor = tiny_model_and_processor(seed, **overrides)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory

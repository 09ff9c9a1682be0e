"""The from-scratch multimodal GPT, registered with transformers' Auto classes on import."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .configuration_mmgpt import MMGPTConfig
from .modeling_mmgpt import MMGPTForCausalLM, MMGPTModel, load_gpt2_weights, sinusoidal_positions
from .processing_mmgpt import SPECIAL_TOKENS, MMGPTProcessor, train_tokenizer

AutoConfig.register(MMGPTConfig.model_type, MMGPTConfig, exist_ok=True)
AutoModel.register(MMGPTConfig, MMGPTModel, exist_ok=True)
AutoModelForCausalLM.register(MMGPTConfig, MMGPTForCausalLM, exist_ok=True)
AutoModelForImageTextToText.register(MMGPTConfig, MMGPTForCausalLM, exist_ok=True)
AutoProcessor.register(MMGPTConfig, MMGPTProcessor, exist_ok=True)

__all__ = [
    "MMGPTConfig",
    "MMGPTForCausalLM",
    "MMGPTModel",
    "MMGPTProcessor",
    "SPECIAL_TOKENS",
    "load_gpt2_weights",
    "sinusoidal_positions",
    "train_tokenizer",
]

"""A tiny random SmolVLM (Idefics3) checkpoint, written by the tests themselves: the same files a Hub id such as
HuggingFaceTB/SmolVLM-256M-Instruct has (config, safetensors, tokenizer, processor with its PIL image processor and
SmolVLM's chat template), at test size, so the "vlm" loader runs offline on the code path a Space takes."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    PreTrainedTokenizerFast,
)

SPECIALS = ("<|endoftext|>", "<unk>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
            "<global-img>")
WORDS = ("User Assistant : what colour is the circle square star red blue green yellow a small large it yes no "
         "describe this picture in one sentence . ? left right top bottom").split()
# SmolVLM-256M-Instruct's chat template (chat_template.json on the Hub)
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IMAGE_SIDE = 32  # pixels the vision encoder takes (SmolVLM: 512)
IMAGE_TOKENS = 4  # per picture after the pixel shuffle: (32 / 8) ** 2 patches / 2 ** 2 (SmolVLM: 64)


def save_tiny_vlm(directory: str | Path, seed: int = 0, end_of_answer: bool = True) -> Path:
    """Write the checkpoint to `directory`; with `end_of_answer` False its end token is switched off, so every
    answer runs to max_new_tokens."""
    directory = Path(directory)
    vocab = {token: index for index, token in enumerate([*SPECIALS, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>", additional_special_tokens=["<fake_token_around_image>", "<image>", "<global-img>"])
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 2 * IMAGE_SIDE},
                                               max_image_size={"longest_edge": IMAGE_SIDE})
    Idefics3Processor(image_processor, tokenizer, image_seq_len=IMAGE_TOKENS,
                      chat_template=CHAT_TEMPLATE).save_pretrained(directory)
    torch.manual_seed(seed)
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=IMAGE_SIDE, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3),
        scale_factor=2, image_token_id=vocab["<image>"])
    model = Idefics3ForConditionalGeneration(config)
    end = vocab["<end_of_utterance>"]
    silent = [vocab[token] for token in SPECIALS if token != "<end_of_utterance>" or not end_of_answer]
    model.generation_config.update(eos_token_id=end if end_of_answer else None, pad_token_id=0,
                                   suppress_tokens=silent)  # a random model must not write image tokens
    model.save_pretrained(directory)
    return directory

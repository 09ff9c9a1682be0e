"""Where a run's weights come from and go: a fresh model, a warm start from an earlier checkpoint (grown to the
run's image size, stem blocks and audio depth), and the atomic save a resume reads back."""

import shutil
from pathlib import Path

import torch

from ..model import MMGPTConfig, MMGPTForCausalLM, MMGPTProcessor, train_tokenizer
from .batches import tokenizer_corpus
from .config import TrainConfig


def save_checkpoint(path: Path, model, processor, optimizer, state: dict) -> None:
    """Model + processor in Hub format, plus optimizer and loop state; swapped in atomically."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), **state}, tmp / "trainer_state.pt")
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def answer_after(describes: bool) -> str | None:
    """What a checkpoint's processor records as the end of what an answer says before the answer itself (None:
    its answers say nothing before it)."""
    from ..data.questions import ANSWER_AFTER

    return ANSWER_AFTER if describes else None


def warm_start(location: str, image_stem_blocks: int = 0, image_size: int = 0, audio_layers: int = 0):
    """Model and processor from an earlier checkpoint, given the question tokens if it predates them (v3), and
    grown to `image_stem_blocks` stem blocks if it has fewer (the new ones start as the identity), to `image_size`
    pixels per side if it sees fewer (`grow_image_size`), and to `audio_layers` audio encoder blocks
    (`silence_new_audio_layers`). A checkpoint with more keeps all of its own: trained blocks and resolution are never
    dropped, so the defaults continue any checkpoint."""
    from ..model.processing_mmgpt import SPECIAL_TOKENS

    had = MMGPTConfig.from_pretrained(location)
    model = MMGPTForCausalLM.from_pretrained(location, image_stem_blocks=max(had.image_stem_blocks, image_stem_blocks),
                                             audio_layers=max(had.audio_layers, audio_layers))
    silence_new_audio_layers(model, had.audio_layers)
    processor = MMGPTProcessor.from_pretrained(location)
    if image_size > had.image_size:
        model = grow_image_size(model, image_size)
        processor.image_size = image_size  # and nothing else: the checkpoint's answer settings stay as they were
    missing = [t for t in SPECIAL_TOKENS if t not in processor.tokenizer.get_vocab()]
    if missing:
        tokenizer = processor.tokenizer
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        processor = MMGPTProcessor.from_config(model.config, tokenizer)
    return model, processor


def fresh_model(cfg: TrainConfig, train_text: str) -> tuple[MMGPTForCausalLM, MMGPTProcessor]:
    """A new model of `cfg`'s sizes and its processor, the tokenizer trained on `tokenizer_corpus(train_text)`."""
    tokenizer = train_tokenizer(tokenizer_corpus(train_text, cfg.seed), cfg.vocab_size)
    config = MMGPTConfig(
        vocab_size=len(tokenizer), n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
        dropout=cfg.dropout, image_layers=cfg.image_layers, image_stem_layers=cfg.image_stem_layers,
        image_stem_blocks=cfg.image_stem_blocks, image_position_std=cfg.image_position_std,
        audio_layers=cfg.audio_layers,
        n_positions=cfg.n_positions, image_size=cfg.image_size, patch_size=cfg.patch_size,
        max_audio_frames=cfg.max_audio_frames,
    )
    return MMGPTForCausalLM(config), MMGPTProcessor.from_config(config, tokenizer)


def grow_image_size(model: MMGPTForCausalLM, image_size: int) -> MMGPTForCausalLM:
    """The same model seeing `image_size` pixels per side: every weight is kept, since the convolutions and blocks do
    not depend on the resolution, except the row and column position tables, which grow with the patch grid and
    are linearly interpolated, so that a patch keeps the position of the place in the picture it covers."""
    config = MMGPTConfig.from_dict({**model.config.to_dict(), "image_size": image_size})
    grown = MMGPTForCausalLM(config)
    state = model.state_dict()
    for name in ("row_embed", "col_embed"):
        key = f"transformer.image_encoder.{name}.weight"
        table = state[key].T[None]  # (1, D, old grid)
        state[key] = torch.nn.functional.interpolate(table, size=grown.transformer.image_encoder.grid,
                                                     mode="linear", align_corners=True)[0].T
    grown.load_state_dict(state)
    return grown


def silence_new_audio_layers(model: MMGPTForCausalLM, trained_layers: int) -> None:
    """Zero the attention and MLP output projections of the audio encoder blocks after the first `trained_layers`
    (those a warm start added, loaded at random), so that each adds nothing to the residual stream and the model's
    answers are unchanged until they learn."""
    with torch.no_grad():
        for block in model.transformer.audio_encoder.blocks[trained_layers:]:
            for projection in (block.attn.c_proj, block.mlp.c_proj):
                projection.weight.zero_()
                projection.bias.zero_()

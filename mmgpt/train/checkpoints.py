"""Where a run's weights come from and go: a fresh model, a warm start from an earlier checkpoint (grown to the
run's image size, stem layers and blocks, and encoder depths), the atomic save a resume reads back, and the mean of
a lineage's checkpoints."""

import shutil
from pathlib import Path

import torch
from transformers.utils import SAFE_WEIGHTS_NAME as WEIGHTS

from ..model import MMGPTConfig, MMGPTForCausalLM, MMGPTProcessor, train_tokenizer
from .batches import tokenizer_corpus
from .config import TrainConfig

TRAINING_STATE = "trainer_state.pt"


def save_checkpoint(path: Path, model, processor, optimizer, state: dict) -> None:
    """Model + processor in Hub format, plus optimizer and loop state; swapped in atomically."""
    tmp = _fresh_tmp(path)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), **state}, tmp / TRAINING_STATE)
    _swap_in(tmp, path)


def _fresh_tmp(path: Path) -> Path:
    """The empty-to-be folder beside `path` where its next version is written before `_swap_in`."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the folder `tmp` at `path` by two renames, keeping the one it replaces as `.old` between them
    (`recover_checkpoint` puts that back if the second never happens)."""
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def recover_checkpoint(path: Path) -> None:
    """Put back the last whole checkpoint if a save was cut off between its two renames (`save_checkpoint`), which
    leaves none at `path`: without it the run would start over, and its first save would delete the one kept."""
    old = path.with_name(path.name + ".old")
    if not path.exists() and (old / TRAINING_STATE).is_file():
        old.rename(path)


AVERAGED_FILES = ("config.json", "tokenizer.json", "processor_config.json")  # must agree, byte for byte


def checkpoint_problem(path: str | Path, training_run: bool = False) -> str | None:
    """Why `path` is not a checkpoint folder, or None. A model needs its config.json; a training run's checkpoint,
    which a resume, `ship` and `average` read, also its trainer state."""
    needed = ("config.json", TRAINING_STATE) if training_run else ("config.json",)
    missing = [name for name in needed if not (Path(path) / name).is_file()]
    if not missing:
        return None
    kind = "a training run's checkpoint" if training_run else "a checkpoint"
    return f"not {kind} (no {' or '.join(missing)} there)"


class AverageError(ValueError):
    """Checkpoints that cannot be averaged, named."""


def average_checkpoints(sources: list[Path], out: Path) -> Path:
    """Write to `out` the mean of the weights of `sources`, checkpoints of one lineage (each trained on from the one
    before), with the last one's other files and training state, which records what was averaged. Only the last must
    be a training run's checkpoint: the earlier ones may be shipped folders, whose fp32 checkpoint may be lost with
    the machine it was trained on (v4.29's was), or the very weights a run started from.

    Weights along one run's continuations lie in one basin, where their mean is often better than each: the
    Transformer paper averaged its last checkpoints, and "model soups" (Wortsman et al., 2022) fine-tuned ones.
    v4.39 is the mean of v4.37 and of v4.38, trained 75 minutes on from it: over three evaluation seeds it beat
    v4.37 on 14 of 19 held-out figures (test captions 92.0 -> 92.8%, compositional 78.2 -> 80.0%), where v4.38 alone
    had lost ground on captions. Adding v4.36 to the mean helped captions no more, and cost speech."""
    from safetensors.torch import load_file, save_file

    sources, out = [Path(source) for source in sources], Path(out)
    if len(sources) < 2:
        raise AverageError("average needs at least two checkpoints")
    if out.resolve() in {source.resolve() for source in sources}:
        raise AverageError(f"--out {out}: one of the checkpoints averaged; write the mean elsewhere")
    if any(out.resolve() in source.resolve().parents for source in sources):
        raise AverageError(f"--out {out}: holds checkpoints averaged; write the mean elsewhere")
    if out.exists() and not _is_mean(out):  # only an earlier mean is replaced
        raise AverageError(f"--out {out}: already there, and not an earlier mean; give a new folder")
    for source in sources:
        if problem := checkpoint_problem(source, training_run=source is sources[-1]):
            raise AverageError(f"{source}: {problem}")
        missing = [name for name in (WEIGHTS, *AVERAGED_FILES) if not (source / name).is_file()]
        if missing:
            raise AverageError(f"{source}: a checkpoint without {' or '.join(missing)}")
        differing = [name for name in AVERAGED_FILES
                     if (source / name).read_bytes() != (sources[0] / name).read_bytes()]
        if differing:
            raise AverageError(f"{source} and {sources[0]} differ in {', '.join(differing)}: only checkpoints of one "
                               "model, with one tokenizer, can be averaged")
    weights = [load_file(str(source / WEIGHTS)) for source in sources]
    mean = {name: (sum(w[name].double() for w in weights) / len(weights)).to(weights[-1][name].dtype)
            for name in weights[-1]}
    state = torch.load(sources[-1] / TRAINING_STATE, weights_only=False, map_location="cpu")
    state["averaged"] = [str(source) for source in sources]
    tmp = _fresh_tmp(out)
    shutil.copytree(sources[-1], tmp, ignore=shutil.ignore_patterns(WEIGHTS, TRAINING_STATE))
    save_file(mean, str(tmp / WEIGHTS), metadata={"format": "pt"})
    torch.save(state, tmp / TRAINING_STATE)
    _swap_in(tmp, out)
    return out


def _is_mean(path: Path) -> bool:
    """Whether `path` is a checkpoint that `average_checkpoints` wrote."""
    try:
        return "averaged" in torch.load(path / TRAINING_STATE, weights_only=False, map_location="cpu")
    except Exception:  # none there, or unreadable: not ours to replace
        return False


def answer_after(describes: bool) -> str | None:
    """What a checkpoint's processor records as the end of what an answer says before the answer itself (None:
    its answers say nothing before it)."""
    from ..data.questions import ANSWER_AFTER

    return ANSWER_AFTER if describes else None


def warm_start(location: str, image_stem_blocks: int = 0, image_size: int = 0, audio_layers: int = 0,
               image_layers: int = 0, image_stem_layers: int = 0, n_layer: int = 0):
    """Model and processor from an earlier checkpoint, given the question tokens if it predates them (v3), and
    grown to `image_stem_blocks` stem blocks if it has fewer (the new ones start as the identity), to `image_size`
    pixels per side if it sees fewer (`grow_image_size`), to `audio_layers` audio and `image_layers` image encoder
    blocks and `n_layer` decoder blocks, the new ones after the old (`silence_new_blocks`), and to
    `image_stem_layers` stem layers (`add_stem_layer`, which doubles the pixels per side). A checkpoint with more
    keeps all of its own: trained blocks and resolution are never dropped, so the defaults continue any checkpoint."""
    from ..model.processing_mmgpt import SPECIAL_TOKENS

    had = MMGPTConfig.from_pretrained(location)
    model = MMGPTForCausalLM.from_pretrained(location, image_stem_blocks=max(had.image_stem_blocks, image_stem_blocks),
                                             audio_layers=max(had.audio_layers, audio_layers),
                                             image_layers=max(had.image_layers, image_layers),
                                             n_layer=max(had.n_layer, n_layer))
    silence_new_blocks(model.transformer.audio_encoder.blocks, had.audio_layers)
    silence_new_blocks(model.transformer.image_encoder.blocks, had.image_layers)
    silence_new_blocks(model.transformer.h, had.n_layer)
    processor = MMGPTProcessor.from_pretrained(location)
    for _ in range(image_stem_layers - had.image_stem_layers):
        model = add_stem_layer(model)
    if image_size > model.config.image_size:
        model = grow_image_size(model, image_size)
    # and nothing else: the checkpoint's answer settings stay as they were
    processor.image_size, processor.patch_size = model.config.image_size, model.config.patch_size
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


def add_stem_layer(model: MMGPTForCausalLM) -> MMGPTForCausalLM:
    """The same model seeing pictures at twice the resolution through one more stride-2 stem layer in front, so that
    the convolutions see finer detail while the decoder keeps its grid of patches (`image_size` and `patch_size`
    both double). Every trained weight is kept. The new layer starts as a 2x2 average of the picture, which the old
    first layer reads as it read the picture itself: each colour travels as GELU(x) and GELU(-x), whose difference is
    exactly x, since GELU(x) = x * Phi(x). Its other channels start at random, read by zero weights, so that they can
    learn what the coarser picture lost."""
    old = model.config
    config = MMGPTConfig.from_dict({**old.to_dict(), "image_stem_layers": old.image_stem_layers + 1,
                                    "image_size": 2 * old.image_size, "patch_size": 2 * old.patch_size})
    grown = MMGPTForCausalLM(config)
    prefix = "transformer.image_encoder."
    state, shifted, channels = grown.state_dict(), {}, old.num_channels
    if state[prefix + "stem.0.weight"].shape[0] < 2 * channels:
        raise ValueError(f"a new first stem layer of n_embd / 2**{config.image_stem_layers} channels cannot carry "
                         f"the picture's {channels} colours twice: n_embd ({old.n_embd}) is too small")
    # Every trained stem layer moves one place down: convolution i sits at stem.{2i} (a GELU after each), its blocks
    # at stem_blocks.{i}.
    moves = {f"{prefix}stem.": 2, f"{prefix}stem_blocks.": 1}
    for name, weight in model.state_dict().items():
        for group, places in moves.items():
            if name.startswith(group):
                index, rest = name[len(group):].split(".", 1)
                name = f"{group}{int(index) + places}.{rest}"
        shifted[name] = weight
    new_conv, old_first = prefix + "stem.0.", prefix + "stem.2.weight"
    with torch.no_grad():
        copy = state[new_conv + "weight"][: 2 * channels]
        copy.zero_()
        for c in range(channels):  # the 3x3 kernel's offsets 0 and +1: the 2x2 block a coarser pixel covers
            copy[c, c, 1:, 1:], copy[channels + c, c, 1:, 1:] = 0.25, -0.25
        state[new_conv + "bias"][: 2 * channels] = 0.0
        trained = shifted[old_first]
        widened = torch.zeros_like(state[old_first])
        widened[:, :channels], widened[:, channels : 2 * channels] = trained, -trained
        shifted[old_first] = widened
    state.update(shifted)
    grown.load_state_dict(state)
    return grown


def silence_new_blocks(blocks: torch.nn.ModuleList, trained_layers: int) -> None:
    """Zero the attention and MLP output projections of the blocks after the first `trained_layers` (those
    a warm start added, loaded at random), so that each adds nothing to the residual stream and the model's answers
    are unchanged until they learn."""
    with torch.no_grad():
        for block in blocks[trained_layers:]:
            for projection in (block.attn.c_proj, block.mlp.c_proj):
                projection.weight.zero_()
                projection.bias.zero_()

"""What the model saw: token confidences and attention maps, from one extra forward pass after generation.

`explain(adapter, request, generated)` runs the model once more over the finished sequence (prompt + generated
tokens) with attention weights on, after streaming is over, so streaming never slows down. It returns an
`Explanation` with whichever of these the model can give; the rest stay None, with a note for users:
- `tokens`: each generated token, the probability the model gave it and its 5 likeliest alternatives (every model);
- `image_maps`: per word, the decoder's attention over the image patches (mmgpt, SmolVLM, ViT-GPT2, BLIP);
- `audio_curves`: per word, the decoder's attention over time (mmgpt, Whisper).
An answer to a question about a picture (`AskRequest`) gets maps over the picture and, when mmgpt heard the
question, curves over the recorded question too: picture and question stand in one sequence.

Attention of a generated token means the attention of the query that *predicted* it (the position before it),
which is what the model looked at when it chose that token. Per token, the weights on the image (or audio) keys
are combined over layers and heads into one map that sums to 1; a word (a maximal run of tokens without a leading
space) gets the mean of its tokens' maps, normalized again.

Which layers and heads:
- mmgpt: every head of every decoder layer for images, of the second half of the layers for audio, each head's map
  weighted by how concentrated it is (`concentration_weighted_map`). Measured on the first shipped checkpoint
  (step 1520; `tests/test_explain.py` re-checks the left-half and silence properties on whichever is shipped)
  against plain averaging: on 80 shape words of test scenes, the map's mass on the named object's patches
  is 0.48 against 0.28 (chance 0.14); for single shapes in the left third, the mass in the left half is 0.90 on
  average (lowest 0.74) against 0.64 (lowest 0.51). Most heads spread their attention over the whole picture and
  drown the few that look at the shapes when all are averaged. Audio alignment is weaker: with words spoken one by
  one after 1 s of silence, the curve peaks inside its word 31% of the time (about 10% by chance) and peaks follow
  the word order with Spearman 0.66 (all layers averaged: 23%, 0.44); the first word of an utterance after 1 s of
  silence peaks after that second in 24 of 24. The predicting query beats the token's own position for images
  (mass 0.48 against 0.45). No single layer wins on images; the best audio layer (3) is about as good as the second
  half but would have to be picked again for every checkpoint.
- Whisper: the checkpoint's `generation_config.alignment_heads` (the heads OpenAI found to follow time); without
  them, every head of the second half of the decoder layers, Whisper's own default.
- ViT-GPT2 and BLIP: every head of every decoder cross-attention layer, averaged (not checked on real weights:
  this machine cannot download them).
- SmolVLM (Idefics3): every head of every decoder layer over the picture's image tokens, weighted by concentration
  as for mmgpt; one picture not split into tiles gives a square grid (8 x 8 for SmolVLM-256M). Not checked on real
  weights either.

Shapes: T generated tokens, S sequence (keys), P image patches, A audio steps, V vocabulary.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from .audio import HOP_LENGTH, SAMPLE_RATE
from .i18n import Message
from .requests import AskRequest, AudioRequest, ImageRequest

logger = logging.getLogger(__name__)

TOP_K = 5  # alternatives shown per token
PIECE_CONTEXT_TOKENS = 16  # tokens decoded before a token to find its own text (spacing, multi-byte characters)
MMGPT_FRAMES_PER_AUDIO_TOKEN = 4  # two stride-2 convolutions: one audio token = 4 mel frames = 40 ms
CONCENTRATION_POWER = 2.0  # mmgpt maps: how strongly concentrated heads outvote diffuse ones
MMGPT_LAYERS_FROM = {"image": 0.0, "audio": 0.5}  # mmgpt maps read the decoder layers from this fraction of depth on
VLM_MODEL_TYPES = ("idefics3", "smolvlm")  # decoders that read image tokens in their own sequence, like mmgpt
SWITCH_LOCK = threading.Lock()  # one eager-attention switch at a time (see `_eager_attention`)


@dataclass(frozen=True)
class TokenInfo:
    text: str  # the token's own text, leading space included ("" for part of a multi-byte character)
    prob: float  # probability the model gave this token, in [0, 1] (softmax of the raw logits, temperature 1)
    top5: list[tuple[str, float]]  # the TOP_K likeliest tokens with their probabilities, most likely first
    token_id: int


@dataclass(frozen=True)
class WordMap:
    word: str
    grid: np.ndarray  # float32 (rows, cols), row-major over the image as the model saw it; sums to 1
    tokens: tuple[int, ...]  # indices into the generated tokens that make up the word


@dataclass(frozen=True)
class WordCurve:
    word: str
    weights: np.ndarray  # float32 (A,), attention over time steps from the start of the clip; sums to 1
    seconds_per_step: float  # step i covers [i, i + 1) * seconds_per_step
    tokens: tuple[int, ...]

    @property
    def peak_seconds(self) -> float:
        """Centre of the most attended step, in seconds from the start of the clip."""
        return (int(np.argmax(self.weights)) + 0.5) * self.seconds_per_step


@dataclass(frozen=True)
class Explanation:
    tokens: list[TokenInfo] | None = None  # every generated token in order; None if the pass could not run
    image_maps: list[WordMap] | None = None  # one per word, in order; None unless an image request on a model that can
    audio_curves: list[WordCurve] | None = None  # one per word; None unless an audio request on a model that can
    note: Message | None = None  # for users, in their language: why something is missing


# --- one forward pass ---------------------------------------------------------------------------------------------


@dataclass
class _Pass:
    """What one forward pass over prompt + generated gives, reduced to the generated tokens."""

    generated_ids: list[int]
    logits: torch.Tensor  # (T, V) float32: row t predicted generated token t
    # source ("image", "audio") -> (T, K) float32 over its keys (patches or audio steps); only the sources the model
    # could show (a question about a picture can have both: the picture and the spoken question)
    attention: dict[str, torch.Tensor] = field(default_factory=dict)
    grid: tuple[int, int] | None = None  # image patch grid (rows, cols) for an image source
    seconds_per_step: float | None = None  # for an audio source


def _family(model) -> str:
    model_type = getattr(model.config, "model_type", "")
    if model_type in ("mmgpt", "whisper", "blip", "vision-encoder-decoder"):
        return model_type
    if model_type in VLM_MODEL_TYPES:
        return "vlm"
    if getattr(model.config, "is_encoder_decoder", False):
        return "encoder-decoder"  # one we know nothing about: no explanation
    return "causal-lm"


def _all_heads(attentions, layers: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """(layer, head) pairs of every head of `layers` (default: all layers)."""
    layers = range(len(attentions)) if layers is None else layers
    return [(layer, head) for layer in layers for head in range(attentions[layer].shape[1])]


def _head_weights(attentions, heads: Sequence[tuple[int, int]], queries: torch.Tensor,
                  keys: torch.Tensor) -> torch.Tensor:
    """Raw attention of each head in `heads` from `queries` to `keys`: `(N heads, T, K)` float32, batch row 0."""
    return torch.stack([attentions[layer][0, head].float()[queries][:, keys] for layer, head in heads])


def _normalized(weights: torch.Tensor) -> torch.Tensor:
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)


def mean_map(weights: torch.Tensor) -> torch.Tensor:
    """`(N, T, K)` -> `(T, K)`: the heads' raw weights averaged, then normalized over the keys."""
    return _normalized(weights.mean(0))


def concentration_weighted_map(weights: torch.Tensor) -> torch.Tensor:
    """`(N, T, K)` -> `(T, K)`: each head's map (normalized over the keys) weighted by how concentrated it is,
    `(1 - entropy / log K) ** CONCENTRATION_POWER`, so heads that look at a few places outvote heads that spread
    their attention evenly (which carry no "where")."""
    maps = _normalized(weights)
    if maps.shape[-1] < 2:
        return maps.mean(0)
    entropy = -(maps * maps.clamp_min(1e-12).log()).sum(-1)  # (N, T)
    concentration = (1.0 - entropy / math.log(maps.shape[-1])).clamp_min(0.0) ** CONCENTRATION_POWER
    total = concentration.sum(0)[:, None]  # (T, 1); 0 when every head is perfectly even: then a plain mean
    combined = torch.where(total > 1e-12, (maps * concentration[..., None]).sum(0) / total.clamp_min(1e-12),
                           maps.mean(0))
    return _normalized(combined)


def _as_ids(tokenizer, generated) -> list[int]:
    if isinstance(generated, str):
        return list(tokenizer(generated, add_special_tokens=False)["input_ids"])
    if isinstance(generated, torch.Tensor):
        return [int(i) for i in generated.reshape(-1).tolist()]
    return [int(i) for i in generated]


@torch.no_grad()
def _decoder_only_pass(model, inputs: dict, generated_ids: list[int], sources: Sequence[str] = ()) -> _Pass:
    """mmgpt, a vision-language model or any causal LM: the generated tokens appended to the prompt, one forward
    pass; attention over each of `sources` ("image", "audio"), whose tokens stand in the sequence."""
    prompt = inputs["input_ids"]
    if prompt.shape[0] != 1:
        raise ValueError(f"explanations take one request at a time, got a batch of {prompt.shape[0]}")
    new = torch.tensor([generated_ids], dtype=prompt.dtype, device=prompt.device)
    input_ids = torch.cat([prompt, new], dim=1)
    kwargs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}  # pixels, audio
    mask = inputs.get("attention_mask")
    if mask is not None:
        kwargs["attention_mask"] = torch.cat([mask, torch.ones_like(new, dtype=mask.dtype)], dim=1)
    T, P = len(generated_ids), prompt.shape[1]
    keep = T + 1  # logits of the last prompt position and of every generated token; the last row is unused
    eager = sources and _family(model) == "vlm"  # mmgpt hands back its weights itself
    with _eager_attention(model) if eager else nullcontext():
        output = model(input_ids=input_ids, use_cache=False, output_attentions=bool(sources), logits_to_keep=keep,
                       **kwargs)
    result = _Pass(generated_ids, output.logits[0, -keep:-1].float())
    queries = torch.arange(P - 1, P - 1 + T, device=input_ids.device)
    for source in sources:
        keys, layers = _source_keys(model, input_ids[0], source, len(output.attentions), result)
        heads = _all_heads(output.attentions, layers)
        result.attention[source] = concentration_weighted_map(_head_weights(output.attentions, heads, queries, keys))
    return result


def _source_keys(model, input_ids: torch.Tensor, source: str, n_layers: int, result: _Pass):
    """The key positions of `source` in `input_ids` `(S,)` and the decoder layers to read; sets the result's grid
    (image) or time step (audio)."""
    config = model.config
    if _family(model) == "vlm":  # one picture, not split into tiles: a square grid of image tokens
        keys = (input_ids == config.image_token_id).nonzero()[:, 0]
        side = math.isqrt(len(keys))
        if source != "image" or side * side != len(keys) or not keys.numel():
            raise ValueError(f"no square grid of {source} tokens in the prompt ({len(keys)} image tokens)")
        result.grid = (side, side)
        return keys, range(n_layers)
    if source == "image":
        keys = (input_ids == config.image_placeholder_id).nonzero()[:, 0]
        side = config.image_size // config.patch_size
        result.grid = (side, side)
    else:
        keys = (input_ids == config.audio_placeholder_id).nonzero()[:, 0]
        result.seconds_per_step = MMGPT_FRAMES_PER_AUDIO_TOKEN * HOP_LENGTH / SAMPLE_RATE
    if len(keys) == 0:
        raise ValueError(f"the prompt has no {source} placeholders")
    return keys, range(int(config.n_layer * MMGPT_LAYERS_FROM[source]), config.n_layer)


def _configs(model) -> list:
    seen, configs = set(), []
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation_internal") and id(config) not in seen:
            seen.add(id(config))
            configs.append(config)
    return configs


@contextmanager
def _eager_attention(model):
    """Switch a transformers model to eager attention for the duration: SDPA does not hand back its weights.

    The switch is visible to a generation running on the same model in another thread meanwhile; eager attention
    computes the same function, so that generation's text does not change, only its speed for a moment.
    """
    with SWITCH_LOCK:
        saved = [(config, config._attn_implementation_internal) for config in _configs(model)]
        try:
            for config, _ in saved:
                config._attn_implementation_internal = "eager"
            yield
        finally:
            for config, implementation in saved:
                config._attn_implementation_internal = implementation


def _grid_keys(n_keys: int, encoder_config) -> tuple[tuple[int, int], torch.Tensor]:
    """The patch grid of a ViT-style encoder and the key indices of its patches (CLS and other extras dropped)."""
    (height, width), (patch_height, patch_width) = (
        tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in (encoder_config.image_size,
                                                                       encoder_config.patch_size))
    rows, cols = height // patch_height, width // patch_width
    if rows * cols > n_keys:
        raise ValueError(f"a {rows}x{cols} patch grid needs {rows * cols} keys, the encoder gives {n_keys}")
    return (rows, cols), torch.arange(n_keys - rows * cols, n_keys)  # extras (CLS, registers) come first


@torch.no_grad()
def _vision_encoder_decoder_pass(model, inputs: dict, generated_ids: list[int], source: str | None) -> _Pass:
    encoder_outputs = model.encoder(pixel_values=inputs["pixel_values"])
    start = model.generation_config.decoder_start_token_id
    if start is None:
        start = model.config.decoder_start_token_id
    decoder_ids = torch.tensor([[start, *generated_ids]], device=model.device)
    with _eager_attention(model) if source else nullcontext():
        output = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_ids, use_cache=False,
                       output_attentions=source is not None)
    result = _Pass(generated_ids, output.logits[0, :-1].float())
    if source == "image":
        cross = output.cross_attentions
        result.grid, keys = _grid_keys(cross[0].shape[-1], model.config.encoder)
        queries = torch.arange(len(generated_ids), device=model.device)
        result.attention["image"] = mean_map(_head_weights(cross, _all_heads(cross), queries,
                                                            keys.to(model.device)))
    return result


@torch.no_grad()
def _blip_pass(model, inputs: dict, generated_ids: list[int], source: str | None) -> _Pass:
    """BLIP's generate(): the prompt's [CLS] becomes [DEC] (bos) and its final [SEP] is dropped."""
    image_embeds = model.vision_model(pixel_values=inputs["pixel_values"])[0]
    text_config = model.config.text_config
    if inputs.get("input_ids") is not None:
        prompt = inputs["input_ids"][0, :-1].clone()
        prompt[0] = text_config.bos_token_id
    else:
        prompt = torch.tensor([text_config.bos_token_id], device=image_embeds.device)
    input_ids = torch.cat([prompt, torch.tensor(generated_ids, dtype=prompt.dtype, device=prompt.device)])[None]
    with _eager_attention(model) if source else nullcontext():
        output = model.text_decoder(input_ids=input_ids, encoder_hidden_states=image_embeds, use_cache=False,
                                    output_attentions=source is not None, return_dict=True)
    P, T = len(prompt), len(generated_ids)
    result = _Pass(generated_ids, output.logits[0, P - 1:P - 1 + T].float())
    if source == "image":
        cross = output.cross_attentions
        result.grid, keys = _grid_keys(cross[0].shape[-1], model.config.vision_config)
        queries = torch.arange(P - 1, P - 1 + T, device=input_ids.device)
        result.attention["image"] = mean_map(_head_weights(cross, _all_heads(cross), queries,
                                                            keys.to(input_ids.device)))
    return result


def _whisper_language_id(model, language: str | None, encoder_outputs) -> int:
    config = model.generation_config
    if language is None:
        return int(model.detect_language(encoder_outputs=encoder_outputs, generation_config=config)[0])
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    code = language.lower()
    code = TO_LANGUAGE_CODE.get(code, code)
    return config.lang_to_id[f"<|{code}|>"]


@torch.no_grad()
def _whisper_pass(model, inputs: dict, generated_ids: list[int], source: str | None, audio_seconds: float,
                  window_seconds: float) -> _Pass:
    """Whisper's decoder prompt, rebuilt as generate() builds it: start, language, task, no-timestamps."""
    encoder_outputs = model.get_encoder()(inputs["input_features"])
    config = model.generation_config
    prefix = [config.decoder_start_token_id]
    if getattr(config, "is_multilingual", False):
        prefix.append(_whisper_language_id(model, inputs.get("language"), encoder_outputs))
        prefix.append(config.task_to_id[inputs.get("task") or "transcribe"])
    if getattr(config, "no_timestamps_token_id", None) is not None:
        prefix.append(config.no_timestamps_token_id)
    decoder_ids = torch.tensor([prefix + generated_ids], device=model.device)
    with _eager_attention(model) if source else nullcontext():
        output = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_ids, use_cache=False,
                       output_attentions=source is not None)
    P, T = len(prefix), len(generated_ids)
    result = _Pass(generated_ids, output.logits[0, P - 1:P - 1 + T].float())
    if source == "audio":
        cross = output.cross_attentions
        n_steps = cross[0].shape[-1]  # encoder frames of a whole window: the recording, then padding
        result.seconds_per_step = window_seconds / n_steps  # 30 s / 1500 = 20 ms
        heard = max(1, min(n_steps, math.ceil(audio_seconds / result.seconds_per_step)))
        heads = [(int(layer), int(head)) for layer, head in getattr(config, "alignment_heads", None) or []]
        heads = heads or _all_heads(cross, range(len(cross) // 2, len(cross)))
        queries = torch.arange(P - 1, P - 1 + T, device=model.device)
        keys = torch.arange(heard, device=model.device)  # only the recording, not the padding after it
        result.attention["audio"] = mean_map(_head_weights(cross, heads, queries, keys))
    return result


def forward_pass(adapter, request, generated_ids: list[int], sources: Sequence[str] = ()) -> _Pass:
    """One forward pass over the request's prompt and `generated_ids`; attention over each of `sources` ("image",
    "audio") that the model can show; raises if it cannot."""
    model = adapter.model
    inputs = adapter.prepare(request)
    family = _family(model)
    source = sources[0] if len(sources) == 1 else None  # the one source of a caption or a transcript
    if family in ("mmgpt", "vlm", "causal-lm"):
        shown = {"mmgpt": sources, "vlm": [s for s in sources if s == "image"], "causal-lm": ()}[family]
        return _decoder_only_pass(model, inputs, generated_ids, shown)
    if family == "vision-encoder-decoder":
        return _vision_encoder_decoder_pass(model, inputs, generated_ids, source if source == "image" else None)
    if family == "blip":
        return _blip_pass(model, inputs, generated_ids, source if source == "image" else None)
    if family == "whisper":
        seconds = len(request.waveform) / SAMPLE_RATE
        return _whisper_pass(model, inputs, generated_ids, source if source == "audio" else None, seconds,
                             adapter.max_audio_seconds)
    raise ValueError(f"no explanation pass for {type(model).__name__}")


# --- from one pass to tokens, words, maps and curves --------------------------------------------------------------


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token's own text, as it shows in the decoded whole: `" red"`, `"dish"`, `""` for a token that only
    starts a multi-byte character (the character goes to the token that completes it); special tokens give ""."""
    pieces = []
    for i in range(len(ids)):
        context = list(ids[max(0, i - PIECE_CONTEXT_TOKENS):i])
        before = _printable(tokenizer.decode(context, skip_special_tokens=True))
        after = _printable(tokenizer.decode(context + [ids[i]], skip_special_tokens=True))
        common = 0  # usually all of `before`; less where decoding tidies earlier text (e.g. BERT's " ' ")
        while common < min(len(before), len(after)) and before[common] == after[common]:
            common += 1
        pieces.append(after[common:])
    whole = tokenizer.decode(list(ids), skip_special_tokens=True)
    shown = "".join(pieces)
    if pieces and whole.startswith(shown) and len(whole) > len(shown):
        pieces[-1] += whole[len(shown):]  # bytes that no later token completes show as they decode
    return pieces


def _printable(text: str) -> str:
    """Drop a trailing replacement character: bytes of a character that the next token completes."""
    return text.rstrip("\ufffd")


def group_words(pieces: Sequence[str], skip: Sequence[int] = ()) -> list[tuple[str, tuple[int, ...]]]:
    """(word, token indices) for each maximal run of tokens whose text does not start with whitespace.

    Tokens with no text (an incomplete character) join the word they are in; whitespace-only tokens belong to no
    word; tokens at the indices in `skip` (special tokens) are left out.
    """
    words: list[tuple[str, list[int]]] = []
    start_new = True
    for index, piece in enumerate(pieces):
        if index in skip:
            continue
        if piece.isspace():
            start_new = True
        elif start_new or piece[:1].isspace():
            words.append((piece, [index]))
            start_new = False
        else:
            words[-1] = (words[-1][0] + piece, words[-1][1] + [index])
    return [(text.strip(), tuple(indices)) for text, indices in words if text.strip()]


def _confidences(tokenizer, result: _Pass, pieces: Sequence[str]) -> list[TokenInfo]:
    probs = result.logits.softmax(-1)  # (T, V)
    top = probs.topk(min(TOP_K, probs.shape[-1]), dim=-1)
    special = set(getattr(tokenizer, "all_special_ids", []))
    infos = []
    for t, token_id in enumerate(result.generated_ids):
        text = pieces[t]
        if not text and token_id in special:
            text = tokenizer.convert_ids_to_tokens(token_id)
        alternatives = [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values[t], top.indices[t])]
        infos.append(TokenInfo(text, float(probs[t, token_id]), alternatives, token_id))
    return infos


def _word_weights(result: _Pass, words, source: str) -> list[tuple[str, tuple[int, ...], np.ndarray]]:
    out = []
    for word, indices in words:
        weights = result.attention[source][list(indices)].mean(0)
        weights = (weights / weights.sum().clamp_min(1e-12)).cpu().numpy().astype(np.float32)
        out.append((word, indices, weights))
    return out


def image_maps_from(result: _Pass, words) -> list[WordMap]:
    return [WordMap(word, weights.reshape(result.grid), indices)
            for word, indices, weights in _word_weights(result, words, "image")]


def audio_curves_from(result: _Pass, words) -> list[WordCurve]:
    return [WordCurve(word, weights, result.seconds_per_step, indices)
            for word, indices, weights in _word_weights(result, words, "audio")]


# --- public entry points ------------------------------------------------------------------------------------------


NO_ATTENTION_NOTES = {("image",): "explain_no_attention_image", ("audio",): "explain_no_attention_audio",
                      ("image", "audio"): "explain_no_attention_image_audio"}  # by `_sources_of`


def _sources_of(request) -> tuple[str, ...]:
    """What a request's answer can be traced back to: its picture, its recording, or both (a spoken question)."""
    if isinstance(request, ImageRequest):
        return ("image",)
    if isinstance(request, AudioRequest):
        return ("audio",)
    if isinstance(request, AskRequest):
        return ("image", "audio") if request.audio is not None else ("image",)
    return ()


def explain(adapter, request, generated: str | Sequence[int] | torch.Tensor) -> Explanation:
    """Token confidences and, where the model can give them, per-word attention maps over the image or curves over
    the audio, for `generated` (the streamed text, or the new token ids) written in answer to `request`.

    One forward pass of `adapter.model` (Whisper with language detection adds a one-token step); never raises:
    what cannot be had is None, with `note` saying why.
    """
    try:
        return _explain(adapter, request, generated)
    except Exception as exc:  # a missing feature must not break the UI
        logger.warning("explanation failed for %s: %s: %s", type(adapter.model).__name__, type(exc).__name__, exc,
                       exc_info=True)
        return Explanation(note=Message("explain_failed"))


def _explain(adapter, request, generated) -> Explanation:
    sources = _sources_of(request)
    if isinstance(request, AudioRequest) and adapter.max_audio_seconds:
        seconds = len(request.waveform) / SAMPLE_RATE
        if seconds > adapter.max_audio_seconds + 1e-6:
            return Explanation(note=Message("explain_audio_too_long", max_seconds=f"{adapter.max_audio_seconds:g}",
                                            seconds=f"{seconds:.1f}"))
    generated_ids = _as_ids(adapter.tokenizer, generated)
    if not generated_ids:
        return Explanation(tokens=[], image_maps=[] if "image" in sources else None,
                           audio_curves=[] if "audio" in sources else None)
    result = forward_pass(adapter, request, generated_ids, sources)
    pieces = token_pieces(adapter.tokenizer, generated_ids)
    tokens = _confidences(adapter.tokenizer, result, pieces)
    if not result.attention:
        note = Message(NO_ATTENTION_NOTES[tuple(sources)]) if sources else None
        return Explanation(tokens, note=note)
    special = set(getattr(adapter.tokenizer, "all_special_ids", []))
    words = group_words(pieces, skip={t for t, token_id in enumerate(generated_ids) if token_id in special})
    return Explanation(tokens,
                       image_maps=image_maps_from(result, words) if "image" in result.attention else None,
                       audio_curves=audio_curves_from(result, words) if "audio" in result.attention else None)


def token_confidence(adapter, request, generated) -> list[TokenInfo] | None:
    return explain(adapter, request, generated).tokens


def image_attention(adapter, request, generated) -> list[WordMap] | None:
    return explain(adapter, request, generated).image_maps


def audio_attention(adapter, request, generated) -> list[WordCurve] | None:
    return explain(adapter, request, generated).audio_curves

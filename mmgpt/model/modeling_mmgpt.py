"""mmgpt: one GPT that reads an image, an utterance or text, and writes text.

The sequence the decoder sees is `[modality marker][prefix tokens][task token][text tokens]`. The processor writes
placeholder ids where the prefix goes; the model overwrites their embeddings with the encoder's outputs, so
`input_ids`, `attention_mask` and the KV cache always have the same length and `generate()` works unchanged.

Shapes: B batch, T query length, S key length (cache + T), D width, H heads, P image patches, F mel frames.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ..audio import SILENCE_FEATURE
from .configuration_mmgpt import MMGPTConfig


def sinusoidal_positions(length: int, channels: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """`PE(pos, 2i) = sin(pos / 10000^(2i/d))`, `PE(pos, 2i+1) = cos(pos / 10000^(2i/d))`: `(length, channels)`."""
    position = torch.arange(length, device=device, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, channels, 2, device=device, dtype=torch.float64)
    angle = position / torch.pow(10000.0, two_i / channels)
    table = torch.zeros(length, channels, device=device, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.to(dtype)


class SelfAttention(nn.Module):
    """Multi-head `softmax(QK^T / sqrt(d_k)) V`, causal in the decoder and bidirectional in the encoders."""

    def __init__(self, config: MMGPTConfig, layer_idx: int | None = None):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.layer_idx = layer_idx
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, mask=None, is_causal=False, cache=None, output_attentions=False):
        B, T, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H, S, hd)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions:
            # The explicit form, because scaled_dot_product_attention does not hand back its weights.
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S)
            if is_causal:
                scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(dim=-1)
            y = F.dropout(weights, dropout, self.training) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.resid_dropout(self.c_proj(y)), weights


class MLP(nn.Module):
    def __init__(self, config: MMGPTConfig):
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, inner)
        self.c_proj = nn.Linear(inner, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        # GPT-2's "gelu_new" is the tanh approximation; using it keeps the GPT-2 weights exact.
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, config: MMGPTConfig, layer_idx: int | None = None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = SelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, mask=None, is_causal=False, cache=None, output_attentions=False):
        attn_out, weights = self.attn(self.ln_1(x), mask, is_causal, cache, output_attentions)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class StemConv(nn.Conv2d):
    """A 3x3 stride-2 convolution of the image stem; its own type so that `_init_weights` can give it He init."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=2, padding=1)


class StemBlockConv(nn.Conv2d):
    """A 3x3 stride-1 convolution inside a `StemBlock`; He init, like `StemConv`."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, kernel_size=3, padding=1)


class StemBlockOutput(StemBlockConv):
    """The last convolution of a `StemBlock`: it starts at zero, so that blocks added to a trained model leave its
    outputs unchanged until they learn something."""


class StemBlock(nn.Module):
    """`x + conv(gelu(conv(x)))` at the stem's resolution: corners, edges and curvature seen over a wider field
    than one stride-2 convolution gives."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = StemBlockConv(channels)
        self.conv2 = StemBlockOutput(channels)

    def forward(self, x):
        return x + self.conv2(F.gelu(self.conv1(x)))


class PositionTable(nn.Embedding):
    """A learned table of image rows or columns; its own type so that `_init_weights` can pick its scale."""


class ImageEncoder(nn.Module):
    """[convolutional stem ->] patches -> bidirectional blocks -> one decoder-width vector per patch."""

    def __init__(self, config: MMGPTConfig):
        super().__init__()
        self.grid = config.image_size // config.patch_size
        # Each stem layer halves the resolution and doubles the channels, ending at n_embd / 2; the patch
        # embedding then covers what is left of a patch (patch_size / 2**stem_layers pixels of its input).
        stem, blocks, channels = [], [], config.num_channels
        for i in reversed(range(config.image_stem_layers)):
            out = config.n_embd // 2 ** (i + 1)
            stem += [StemConv(channels, out), nn.GELU()]
            blocks.append(nn.Sequential(*(StemBlock(out) for _ in range(config.image_stem_blocks))))
            channels = out
        self.stem = nn.Sequential(*stem)
        # Kept apart from `stem` so that a checkpoint without blocks keeps its weights' names.
        self.stem_blocks = nn.ModuleList(blocks)
        patch = config.patch_size // 2**config.image_stem_layers
        self.patch_embed = nn.Conv2d(channels, config.n_embd, patch, stride=patch)
        self.row_embed = PositionTable(self.grid, config.n_embd)  # 2-D positions: a row vector plus a column vector
        self.col_embed = PositionTable(self.grid, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.image_layers))
        self.ln_post = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, image_size, image_size)` -> `(B, P, D)`, patches in row-major order."""
        x = pixel_values
        for i, blocks in enumerate(self.stem_blocks):
            x = blocks(self.stem[2 * i + 1](self.stem[2 * i](x)))  # stride-2 convolution, GELU, blocks
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, P, D)
        idx = torch.arange(self.grid, device=x.device)
        pos = (self.row_embed(idx)[:, None, :] + self.col_embed(idx)[None, :, :]).reshape(-1, x.shape[-1])
        x = x + pos
        for block in self.blocks:
            x, _ = block(x)
        return self.proj(self.ln_post(x))


class AudioEncoder(nn.Module):
    """Log-mel frames -> 4x subsampling convolutions -> sinusoidal positions -> bidirectional blocks."""

    def __init__(self, config: MMGPTConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.n_embd, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(config.n_embd, config.n_embd, kernel_size=3, stride=2, padding=1)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.audio_layers))
        self.ln_post = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, input_features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, N_MELS, F)` -> `(B, L, D)` with `L = ceil(F / 4)`; `lengths` (B,) masks out padded tokens."""
        # Pad to whole tokens (4 frames) with silence, as a batch pads its shorter clips, so that a clip's last
        # token sees the same frames alone and in a batch.
        input_features = F.pad(input_features, (0, -input_features.shape[-1] % 4), value=SILENCE_FEATURE)
        x = F.gelu(self.conv1(input_features))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, L, D)
        L, D = x.shape[1], x.shape[2]
        x = x + sinusoidal_positions(L, D, x.device, x.dtype)
        mask = None
        if lengths is not None and bool((lengths < L).any()):
            keep = torch.arange(L, device=x.device)[None, :] < lengths[:, None]  # (B, L)
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~keep, torch.finfo(x.dtype).min)[:, None, None, :]  # (B, 1, 1, L)
        for block in self.blocks:
            x, _ = block(x, mask)
        return self.proj(self.ln_post(x))


class MMGPTPreTrainedModel(PreTrainedModel):
    config_class = MMGPTConfig
    config: MMGPTConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, PositionTable):
            init.normal_(module.weight, std=self.config.image_position_std or self.config.initializer_range)
        elif isinstance(module, StemBlockOutput):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (StemConv, StemBlockConv)):  # at std 0.02, stacked convolutions fade the image out
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)


class MMGPTModel(MMGPTPreTrainedModel):
    """The GPT decoder with both encoders; returns hidden states (the LM head lives in `MMGPTForCausalLM`)."""

    def __init__(self, config: MMGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, layer_idx=i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.image_encoder = ImageEncoder(config)
        self.audio_encoder = AudioEncoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, value):
        self.wte = value

    def embed(self, input_ids, pixel_values=None, input_features=None) -> torch.Tensor:
        """Token embeddings with image patches / audio frames written over their placeholders: `(B, T, D)`."""
        embeds = self.wte(input_ids)
        if pixel_values is not None:
            slots = input_ids == self.config.image_placeholder_id
            counts = slots.sum(dim=1)
            if bool((counts != self.config.num_patches).any()):
                raise ValueError(
                    f"each image needs {self.config.num_patches} image placeholder tokens, got {counts.tolist()}; "
                    "build inputs with MMGPTProcessor"
                )
            patches = self.image_encoder(pixel_values.to(embeds.dtype))
            patches = patches.reshape(-1, patches.shape[-1]).to(embeds.dtype)
            embeds = embeds.masked_scatter(slots[..., None], patches)
        if input_features is not None:
            slots = input_ids == self.config.audio_placeholder_id
            lengths = slots.sum(dim=1)
            frames = self.audio_encoder(input_features.to(embeds.dtype), lengths)  # (B, L, D)
            if bool((lengths > frames.shape[1]).any()):
                raise ValueError(
                    f"audio placeholders {lengths.tolist()} exceed the {frames.shape[1]} tokens the features give"
                )
            keep = torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]
            embeds = embeds.masked_scatter(slots[..., None], frames[keep].to(embeds.dtype))
        return embeds

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        input_features=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        cache=None,
        use_cache=None,
        output_attentions=None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, input_features)
        B, T, _ = inputs_embeds.shape
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if past + T > self.config.n_positions:
            raise ValueError(
                f"sequence of {past + T} tokens is longer than the model's context of {self.config.n_positions}"
            )
        if position_ids is None:
            if attention_mask is not None:
                # Left padding shifts a row's text; count only real tokens so a padded prompt sees the same positions.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=inputs_embeds.device)[None, :]
        x = self.drop(inputs_embeds + self.wpe(position_ids))

        mask, is_causal = self._decoder_mask(attention_mask, B, T, past, x.dtype, x.device)
        attentions = []
        for block in self.h:
            x, weights = block(x, mask, is_causal, cache, bool(output_attentions))
            attentions.append(weights)
        return BaseModelOutputWithPast(
            last_hidden_state=self.ln_f(x), cache=cache, attentions=tuple(attentions) if output_attentions else None
        )

    @staticmethod
    def _decoder_mask(attention_mask, B, T, past, dtype, device):
        """Additive `(B, 1, T, S)` mask, or `(None, is_causal)` when no padding lets SDPA's own paths do it."""
        S = past + T
        if attention_mask is None or bool(attention_mask.all()):
            if past == 0:
                return None, T > 1
            if T == 1:
                return None, False
        query_pos = torch.arange(past, S, device=device)[:, None]
        key_pos = torch.arange(S, device=device)[None, :]
        allowed = (key_pos <= query_pos)[None, None]  # (1, 1, T, S)
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, -S:].bool()
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min), False


class MMGPTForCausalLM(MMGPTPreTrainedModel, GenerationMixin):
    """mmgpt with its (tied) language-model head: logits, loss and `generate()`."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: MMGPTConfig):
        super().__init__(config)
        self.transformer = MMGPTModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        input_features=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        cache=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        hidden = self.transformer(
            input_ids=input_ids,
            pixel_values=pixel_values,
            input_features=input_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
        )
        states = hidden.last_hidden_state
        if logits_to_keep:
            states = states[:, -logits_to_keep:]
        logits = self.lm_head(states)
        loss = None
        if labels is not None:
            loss = self.text_loss(logits, labels, input_ids, attention_mask)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=hidden.cache, attentions=hidden.attentions)

    def text_loss(self, logits, labels, input_ids=None, attention_mask=None) -> torch.Tensor:
        """Mean next-token cross-entropy over text positions; prefix placeholders and padding never count."""
        if attention_mask is not None:
            labels = labels.masked_fill(attention_mask == 0, -100)
        if input_ids is not None:
            prefix = (input_ids == self.config.image_placeholder_id) | (input_ids == self.config.audio_placeholder_id)
            labels = labels.masked_fill(prefix, -100)
        # Shift the labels, not the logits: slicing (B, T, vocab) logits would copy them, hundreds of MB at GPT-2 size.
        targets = F.pad(labels[:, 1:], (0, 1), value=-100)  # (B, T): the token each position predicts
        if attention_mask is not None:  # nor does a prediction made at a padding position (left padding's last pad)
            targets = targets.masked_fill(attention_mask == 0, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)


def load_gpt2_weights(model: MMGPTForCausalLM, gpt2_state_dict: dict[str, torch.Tensor]) -> MMGPTForCausalLM:
    """Copy a `GPT2LMHeadModel` state dict into mmgpt's decoder; the encoders keep their own weights.

    GPT-2 stores its projections as `Conv1D`, whose weight is the transpose of `nn.Linear`'s.
    """
    config = model.config
    own = model.state_dict()
    copied = {}
    for name, tensor in gpt2_state_dict.items():
        if not name.startswith("transformer.") or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if name not in own:
            raise ValueError(f"GPT-2 weight {name!r} has no place in mmgpt; are the sizes the same?")
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            tensor = tensor.t()
        if tensor.shape != own[name].shape:
            raise ValueError(f"{name}: GPT-2 has shape {tuple(tensor.shape)}, mmgpt has {tuple(own[name].shape)}")
        copied[name] = tensor
    expected = {n for n in own if n.startswith("transformer.") and not n.startswith(
        ("transformer.image_encoder.", "transformer.audio_encoder."))}
    if missing := sorted(expected - copied.keys()):
        raise ValueError(f"GPT-2 state dict lacks {len(missing)} decoder weights, e.g. {missing[:3]}")
    model.load_state_dict(copied, strict=False)
    model.tie_weights()
    if config.vocab_size != model.lm_head.weight.shape[0]:
        raise ValueError(f"vocab_size {config.vocab_size} != lm_head rows {model.lm_head.weight.shape[0]}")
    return model

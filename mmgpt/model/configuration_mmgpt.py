"""Configuration of the mmgpt multimodal GPT: every size of the network lives here."""

import math

from transformers import PretrainedConfig


class MMGPTConfig(PretrainedConfig):
    """Sizes of the decoder, the image encoder and the audio encoder, plus the special token ids.

    The decoder's names follow GPT-2 (`n_embd`, `n_layer`, `n_head`, `n_positions`) so that a GPT-2 checkpoint
    maps onto it one to one (see `modeling_mmgpt.load_gpt2_weights`).
    """

    model_type = "mmgpt"
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "n_positions",
    }

    def __init__(
        self,
        vocab_size: int = 2048,
        n_positions: int = 512,
        n_embd: int = 256,
        n_layer: int = 6,
        n_head: int = 8,
        n_inner: int | None = None,
        layer_norm_epsilon: float = 1e-5,
        dropout: float = 0.0,
        initializer_range: float = 0.02,
        # image encoder
        image_size: int = 64,
        patch_size: int = 8,
        num_channels: int = 3,
        image_layers: int = 2,
        image_stem_layers: int = 0,
        image_stem_blocks: int = 0,
        image_position_std: float | None = None,
        # audio encoder
        num_mel_bins: int = 80,
        max_audio_frames: int = 1000,
        audio_layers: int = 2,
        # special tokens: markers introduce a modality, placeholders are overwritten by encoder outputs
        image_token_id: int = 1,
        image_placeholder_id: int = 2,
        audio_token_id: int = 3,
        audio_placeholder_id: int = 4,
        bos_token_id: int = 0,
        eos_token_id: int = 0,
        pad_token_id: int = 0,
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if image_size % patch_size != 0:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        if patch_size % 2**image_stem_layers != 0:
            raise ValueError(
                f"patch_size ({patch_size}) must be divisible by 2**image_stem_layers ({2**image_stem_layers}): "
                "each stem layer halves the resolution before the patch embedding"
            )
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_inner = n_inner
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.image_layers = image_layers
        # Stride-2 3x3 convolutions before the patch embedding ("early convolutions help transformers see
        # better", Xiao et al. 2021): 0 is a plain ViT patch embedding.
        self.image_stem_layers = image_stem_layers
        # Residual pairs of 3x3 convolutions after each stem layer (`StemBlock`); 0 keeps the stem plain.
        self.image_stem_blocks = image_stem_blocks
        # Init std of the row and column position tables; None means initializer_range. Patch content starts
        # near 0.3, and tables far smaller than that are slow to learn where things are.
        self.image_position_std = image_position_std
        self.num_mel_bins = num_mel_bins
        self.max_audio_frames = max_audio_frames
        self.audio_layers = audio_layers
        self.image_token_id = image_token_id
        self.image_placeholder_id = image_placeholder_id
        self.audio_token_id = audio_token_id
        self.audio_placeholder_id = audio_placeholder_id
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def num_patches(self) -> int:
        """Image prefix tokens: one per patch."""
        return (self.image_size // self.patch_size) ** 2

    @staticmethod
    def audio_tokens_for_frames(n_frames: int) -> int:
        """Audio prefix tokens for `n_frames` log-mel frames: two stride-2 convolutions each halve, rounding up."""
        return math.ceil(math.ceil(n_frames / 2) / 2)

    @property
    def max_audio_tokens(self) -> int:
        return self.audio_tokens_for_frames(self.max_audio_frames)

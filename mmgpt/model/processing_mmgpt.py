"""Turn a picture, a recording or a prompt into mmgpt's inputs, and build mmgpt's byte-level BPE tokenizer.

A prompt is `[marker][placeholders][task token][optional text]`:
- caption:    `<|image|> <|patch|> x num_patches <|caption|>`
- transcribe: `<|audio|> <|frame|> x audio_tokens <|transcribe|>`
- continue:   `<|text|> prompt`
- ask:        `<|image|> <|patch|> x num_patches` then, per earlier turn, `<|ask|> question <|answer|> answer
              <|endoftext|>`, then the new question: `[<|audio|> <|frame|> x audio_tokens] <|ask|> [question text]
              <|answer|>`. A spoken question puts its audio before its `<|ask|>`, and no text unless written
              down (below).
The model writes the answer after it and ends with `<|endoftext|>`. A checkpoint that `transcribes_spoken_questions`
(mmgpt-tiny v4.14 on) is prompted up to the `<|ask|>` after a spoken question's audio, writes the question's words
and `<|answer|>`, and from there reads it as the typed question it has become: `[audio] <|ask|> question <|answer|>`.
"""

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BatchFeature, PreTrainedTokenizerFast
from transformers.processing_utils import ProcessorMixin

from ..audio import HOP_LENGTH, SAMPLE_RATE, SILENCE_FEATURE, frames_for_samples, log_mel_spectrogram, to_mono_16k
from .configuration_mmgpt import MMGPTConfig

# Order fixes the ids (0..8) that MMGPTConfig's defaults name.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|image|>",
    "<|patch|>",
    "<|audio|>",
    "<|frame|>",
    "<|caption|>",
    "<|transcribe|>",
    "<|text|>",
    "<|ask|>",  # from mmgpt-tiny v4 on; earlier checkpoints lack these two and cannot answer questions
    "<|answer|>",
)
TASK_TOKENS = {"caption": "<|caption|>", "transcribe": "<|transcribe|>", "continue": "<|text|>", "ask": "<|ask|>"}
PIXEL_MEAN = 0.5  # pixels are scaled to [0, 1] and then normalized to [-1, 1]
PIXEL_STD = 0.5


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE over `texts`: every byte is in the alphabet, so any Unicode string round-trips."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tokenizer)


def wrap_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    eos = SPECIAL_TOKENS[0]
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=eos, eos_token=eos, pad_token=eos)


class MMGPTProcessor(ProcessorMixin):
    """Tokenizer plus the image and audio preprocessing; sizes come from `MMGPTConfig` via `from_config`."""

    def __init__(self, tokenizer=None, image_size: int = 64, patch_size: int = 8, max_audio_frames: int = 1000,
                 answer_after: str | None = None, transcribes_spoken_questions: bool = False, **kwargs):
        self.image_size = image_size
        self.patch_size = patch_size
        self.max_audio_frames = max_audio_frames
        # A checkpoint trained to say what it sees before it answers ("a large red circle at the top, so red")
        # ends the description with this; None: it answers straight away.
        self.answer_after = answer_after
        # True: a spoken question's prompt ends at its `<|ask|>`, and the model first writes the words it heard
        # (see the module docstring), so that it answers from text, as it does typed questions.
        self.transcribes_spoken_questions = transcribes_spoken_questions
        super().__init__(tokenizer, **kwargs)
        vocabulary = tokenizer.get_vocab()
        self.token_ids = {token: vocabulary[token] for token in SPECIAL_TOKENS if token in vocabulary}

    @property
    def can_ask(self) -> bool:
        """Whether this checkpoint's tokenizer has the question tokens (mmgpt-tiny v4 and later)."""
        return "<|ask|>" in self.token_ids

    @property
    def heard_question_ends(self) -> list[int]:
        """The tokens where the words written down for a spoken question end: `<|answer|>`, where the answer would
        begin, or end-of-text. Only for a checkpoint that `transcribes_spoken_questions`."""
        if not self.transcribes_spoken_questions:
            raise ValueError("this mmgpt checkpoint answers spoken questions from the audio; it writes no words down")
        return [self.token_ids["<|endoftext|>"], self.token_ids["<|answer|>"]]

    @classmethod
    def from_config(cls, config: MMGPTConfig, tokenizer) -> "MMGPTProcessor":
        return cls(tokenizer, image_size=config.image_size, patch_size=config.patch_size,
                   max_audio_frames=config.max_audio_frames)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def max_audio_seconds(self) -> float:
        """Longest clip one forward pass takes; longer recordings are cut into windows by the caller."""
        return (self.max_audio_frames - 1) * HOP_LENGTH / SAMPLE_RATE

    # --- one modality at a time -------------------------------------------------------------------------------

    def image_to_pixels(self, image: Image.Image) -> np.ndarray:
        """Any PIL image -> normalized RGB `(3, image_size, image_size)` float32."""
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")  # transparency goes onto white, as a viewer would show it
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float64)
            scale = 257.0 if image.mode.startswith("I;16") or array.max() > 255 else 1.0  # 65535 -> 255
            image = Image.fromarray(np.clip(array / scale, 0, 255).round().astype(np.uint8))
        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        return ((pixels - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)

    def audio_to_features(self, audio: np.ndarray, sampling_rate: int) -> np.ndarray:
        """Waveform at any rate, mono or `(samples, channels)` -> log-mel `(N_MELS, frames)` at 16 kHz."""
        waveform = to_mono_16k(audio, sampling_rate)
        frames = frames_for_samples(len(waveform))
        if frames > self.max_audio_frames:
            raise ValueError(
                f"audio of {len(waveform) / SAMPLE_RATE:.2f} s gives {frames} frames; at most "
                f"{self.max_audio_frames} ({self.max_audio_seconds:.2f} s) fit, so cut it into windows first"
            )
        return log_mel_spectrogram(waveform)

    def prompt_ids(self, task: str, text: str = "", audio_frames: int = 0,
                   history: Sequence[tuple[str, str]] = ()) -> list[int]:
        """Token ids of one prompt; `audio_frames` is the feature frame count of the clip (`transcribe`, or a spoken
        question for `ask`); `history` is the earlier (question, answer) turns of an `ask` conversation."""
        ids = self.token_ids
        if task == "ask":
            return self.ask_ids(text, audio_frames, history)
        if task == "caption":
            prefix = [ids["<|image|>"]] + [ids["<|patch|>"]] * self.num_patches
        elif task == "transcribe":
            prefix = [ids["<|audio|>"]] + [ids["<|frame|>"]] * MMGPTConfig.audio_tokens_for_frames(audio_frames)
        elif task == "continue":
            prefix = []
        else:
            raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_TOKENS)}")
        return prefix + [ids[TASK_TOKENS[task]]] + self._encode(text)

    def ask_ids(self, question: str, audio_frames: int = 0, history: Sequence[tuple[str, str]] = ()) -> list[int]:
        """Token ids of a question about a picture, after its earlier turns (see the module docstring)."""
        if not self.can_ask:
            raise ValueError("this mmgpt checkpoint was trained before questions existed (no <|ask|> token); "
                             "use mmgpt-tiny v4 or later")
        ids = self.token_ids

        def encode(text: str) -> list[int]:  # conversations are learned in lowercase; people type capitals
            return self._encode(text.lower())

        prompt = [ids["<|image|>"]] + [ids["<|patch|>"]] * self.num_patches
        for earlier_question, answer in history:
            prompt += [ids["<|ask|>"], *encode(earlier_question), ids["<|answer|>"], *encode(answer),
                       ids["<|endoftext|>"]]
        if audio_frames:
            prompt += [ids["<|audio|>"]] + [ids["<|frame|>"]] * MMGPTConfig.audio_tokens_for_frames(audio_frames)
            if self.transcribes_spoken_questions and not question:
                return prompt + [ids["<|ask|>"]]  # the model writes the question, then `<|answer|>`
        return prompt + [ids["<|ask|>"], *encode(question), ids["<|answer|>"]]

    def _encode(self, text: str) -> list[int]:
        """Text as text: a user who types "<|patch|>" or "<|answer|>" gets those characters, not the tokens that
        give the sequence its structure."""
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    # --- batches ------------------------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images: Image.Image | Sequence[Image.Image] | None = None,
        audio: np.ndarray | Sequence[np.ndarray] | None = None,
        sampling_rate: int | None = None,
        return_tensors: str = "pt",
        task: str | None = None,
        history: Sequence[Sequence[tuple[str, str]]] | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Prompts for a batch, left-padded for generation.

        `images` -> caption prompts, `audio` -> transcribe prompts, otherwise `text` -> continue prompts.
        `text` beside images or audio is appended after the task token.
        `task="ask"` -> questions about `images`: typed in `text`, or spoken in `audio` (one clip or None per
        image), after each image's earlier turns in `history` (one list of (question, answer) per image).
        """
        if task == "ask":
            return self._ask_batch(images, text, audio, sampling_rate, history, return_tensors)
        if task is not None:
            raise ValueError(f"task {task!r}: only 'ask' is named explicitly; other tasks follow the inputs")
        if images is not None and audio is not None:
            raise ValueError("give images or audio, not both: each prompt carries one modality")
        data = {}
        if images is not None:
            images = [images] if isinstance(images, Image.Image) else list(images)
            texts = self._texts_for(text, len(images))
            prompts = [self.prompt_ids("caption", t) for t in texts]
            data["pixel_values"] = torch.from_numpy(np.stack([self.image_to_pixels(im) for im in images]))
        elif audio is not None:
            if sampling_rate is None:
                raise ValueError(f"sampling_rate is required with audio (mmgpt resamples to {SAMPLE_RATE} Hz)")
            # One array is one clip, `(samples,)` or `(samples, channels)`; a batch is a list of clips.
            clips = [audio] if isinstance(audio, np.ndarray) else list(audio)
            features = [self.audio_to_features(clip, sampling_rate) for clip in clips]
            texts = self._texts_for(text, len(clips))
            prompts = [self.prompt_ids("transcribe", t, f.shape[1]) for f, t in zip(features, texts)]
            data["input_features"] = torch.from_numpy(pad_features(features))
        elif text is not None:
            prompts = [self.prompt_ids("continue", t) for t in ([text] if isinstance(text, str) else text)]
        else:
            raise ValueError("nothing to process: give text, images or audio")
        data.update(pad_left(prompts, self.token_ids["<|endoftext|>"]))
        return BatchFeature(data, tensor_type=return_tensors)

    def _ask_batch(self, images, text, audio, sampling_rate, history, return_tensors) -> BatchFeature:
        if images is None:
            raise ValueError("a question needs the picture it is about: give images")
        images = [images] if isinstance(images, Image.Image) else list(images)
        n = len(images)
        texts = self._texts_for(text, n)
        clips = [None] * n if audio is None else ([audio] if isinstance(audio, np.ndarray) else list(audio))
        histories = [()] * n if history is None else list(history)
        if len(clips) != n or len(histories) != n:
            raise ValueError(f"got {n} images, {len(clips)} audio entries and {len(histories)} histories")
        if any(clip is not None for clip in clips) and sampling_rate is None:
            raise ValueError(f"sampling_rate is required with audio (mmgpt resamples to {SAMPLE_RATE} Hz)")
        features = [None if clip is None else self.audio_to_features(clip, sampling_rate) for clip in clips]
        prompts = [self.ask_ids(t, 0 if f is None else f.shape[1], h) for t, f, h in zip(texts, features, histories)]
        data = {"pixel_values": torch.from_numpy(np.stack([self.image_to_pixels(im) for im in images]))}
        if any(f is not None for f in features):
            if any(f is None for f in features):
                raise ValueError("in one batch, either every question is spoken or none is")
            data["input_features"] = torch.from_numpy(pad_features(features))
        data.update(pad_left(prompts, self.token_ids["<|endoftext|>"]))
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _texts_for(text, n: int) -> list[str]:
        if text is None:
            return [""] * n
        texts = [text] * n if isinstance(text, str) else list(text)
        if len(texts) != n:
            raise ValueError(f"got {len(texts)} texts for {n} inputs")
        return texts

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad id lists: decoder-only generation appends on the right, so real tokens must end there."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            input_ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, width - len(seq):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def pad_features(features: Sequence[np.ndarray]) -> np.ndarray:
    """Stack `(N_MELS, frames_i)` arrays into `(B, N_MELS, max_frames)`, padding with silence."""
    width = max(f.shape[1] for f in features)
    batch = np.full((len(features), features[0].shape[0], width), SILENCE_FEATURE, dtype=np.float32)
    for row, f in enumerate(features):
        batch[row, :, : f.shape[1]] = f
    return batch

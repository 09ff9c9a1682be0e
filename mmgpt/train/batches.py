"""What one training step sees: `TaskBatches` draws each task's sub-batch (scenes, speech, questions and text),
padded and labelled, with the augmentations that stand in for what training cannot draw."""

import functools
import random
import time

import numpy as np
import torch

from ..audio import N_MELS, SAMPLE_RATE
from ..model import MMGPTConfig, MMGPTProcessor
from .config import TrainConfig, focus_shapes, task_names


@functools.cache  # warp_frequencies runs for every training clip
def _mel_bin_frequencies() -> np.ndarray:
    """Centre frequency (Hz) of each log-mel bin, as librosa's filterbank places them."""
    import librosa

    return librosa.mel_frequencies(n_mels=N_MELS + 2, fmin=0.0, fmax=SAMPLE_RATE / 2)[1:-1]


def warp_frequencies(features: np.ndarray, factor: float) -> np.ndarray:
    """Log-mel `(N_MELS, F)` as if every frequency in the clip were multiplied by `factor`.

    A shorter or longer vocal tract moves all formants by about one ratio, so training on warped copies (vocal
    tract length perturbation, Jaitly and Hinton 2013) stands in for voices that training never hears.
    """
    centres = _mel_bin_frequencies()
    source = np.interp(centres / factor, centres, np.arange(N_MELS, dtype=np.float64))  # fractional bins
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, N_MELS - 1)
    weight = (source - low)[:, None]
    return ((1 - weight) * features[low] + weight * features[high]).astype(features.dtype)


def colour_token_ids(tokenizer) -> np.ndarray:
    """The token of each colour word as captions spell it mid-sentence (" red"): one token each, or none at all."""
    from ..data import COLOURS

    ids = [tokenizer.encode(" " + colour, add_special_tokens=False) for colour in COLOURS]
    return np.array([i[0] for i in ids]) if all(len(i) == 1 for i in ids) else np.array([], dtype=int)


def swap_colour_words(input_ids: torch.Tensor, colour_ids: np.ndarray, chance: float,
                      rng: np.random.Generator) -> torch.Tensor:
    """Replace each colour token of the *input* by another colour with probability `chance`; labels keep the truth.

    A caption says colour then shape, so a decoder that reads its own colour word learns which shapes follow
    "pink" in training and never names a pairing it has not seen (the compositional split). Seeing a wrong
    colour word now and then makes it take the shape from the picture instead.
    """
    if not len(colour_ids):
        return input_ids
    ids = input_ids.numpy().copy()
    positions = np.isin(ids, colour_ids) & (rng.random(ids.shape) < chance)
    offsets = rng.integers(1, len(colour_ids), ids.shape)  # never the same colour again
    index = {token: k for k, token in enumerate(colour_ids)}
    for row, col in zip(*np.nonzero(positions)):
        ids[row, col] = colour_ids[(index[ids[row, col]] + offsets[row, col]) % len(colour_ids)]
    return torch.from_numpy(ids)


def tokenizer_corpus(train_text: str, seed: int):
    """What the BPE learns from: Shakespeare (train split), scene captions, commands and numbers."""
    from ..data import COMMANDS, example_captions

    from ..data.questions import random_question
    from ..data.speech import free_phrase

    rng = random.Random(seed)
    yield train_text
    yield "\n".join(example_captions(20_000, seed=seed))
    yield "\n".join(COMMANDS * 50)
    yield "\n".join(str(n) for n in range(1000))
    yield "\n".join(random_question(rng) for _ in range(20_000))
    yield "\n".join(free_phrase(rng) for _ in range(10_000))


def pad_right(sequences: list[list[int]], prompt_lengths: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `labels` (-100 over each prompt, which is given, not learned)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (seq, prompt_length) in enumerate(zip(sequences, prompt_lengths)):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention_mask[row, : len(seq)] = 1
        labels[row, prompt_length: len(seq)] = torch.tensor(seq[prompt_length:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pad_segments(rows: list[list[tuple[list[int], bool]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Like `pad_right`, for rows built of (ids, learned) segments: only learned segments get labels."""
    sequences = [[token for ids, _ in row for token in ids] for row in rows]
    batch = pad_right(sequences, [0] * len(rows), pad_id)
    for r, row in enumerate(rows):
        position = 0
        for ids, learned in row:
            if not learned:
                batch["labels"][r, position:position + len(ids)] = -100
            position += len(ids)
    return batch


class TaskBatches:
    """Draws the sub-batches of one step. Each rank passes its own seed."""

    def __init__(self, cfg: TrainConfig, processor: MMGPTProcessor, train_text: str, seed: int, pool_seed: int,
                 log=print):
        from ..data import iter_scenes, speech_dataset
        from ..data.speech import spoken_text_lines, spoken_word_runs, word_vocabulary
        from ..model.processing_mmgpt import pad_features

        self.cfg, self.processor, self.pad_features = cfg, processor, pad_features
        self.rng = np.random.default_rng(seed)
        self.eos = processor.token_ids["<|endoftext|>"]
        self.text_marker = processor.token_ids["<|text|>"]
        self.text_tokens = np.array(processor.tokenizer.encode(train_text, add_special_tokens=False), np.int32)
        self.scenes = iter_scenes("train", seed)
        self.ask_scenes = iter_scenes("train", seed + 1)
        self.colour_ids = colour_token_ids(processor.tokenizer)
        self.py_rng = random.Random(seed)
        self.focus_shapes = focus_shapes(cfg)
        tasks = task_names(cfg)
        if "transcribe" in tasks:
            start = time.time()
            # The pool is the same on every resume, so its clips come from the on-disk cache after the first run.
            lines = round(cfg.speech_pool * cfg.speech_text_share)
            runs = round(cfg.speech_pool * (cfg.speech_text_share + cfg.speech_word_share)) - lines  # <= the pool
            said = dict(clean_share=cfg.clean_speech_share, other_voice_share=cfg.other_voice_share)
            utterances = speech_dataset("train", cfg.speech_pool - lines - runs, pool_seed, cfg.speech_cache_dir,
                                        **said)
            utterances += spoken_text_lines(train_text, lines, pool_seed, cfg.speech_cache_dir, **said)
            if runs:
                vocabulary = word_vocabulary(train_text, cfg.speech_word_vocabulary)
                utterances += spoken_word_runs(vocabulary, runs, pool_seed, cfg.speech_cache_dir, **said)
            self.speech = sorted(
                ((processor.audio_to_features(u.waveform, SAMPLE_RATE), self.encode(u.transcript))
                 for u in utterances),
                key=lambda item: item[0].shape[1],
            )  # by length, for `speech_window_batches`
            log(f"speech pool: {len(self.speech)} utterances ready in {time.time() - start:.0f} s")
        if "spoken_ask" in tasks:
            start = time.time()
            self.spoken_questions = spoken_question_pool(cfg, pool_seed)
            self.spoken_features = [processor.audio_to_features(u.waveform, SAMPLE_RATE)
                                    for _, _, u in self.spoken_questions]
            log(f"spoken question pool: {len(self.spoken_questions)} ready in {time.time() - start:.0f} s")
        log(f"text: {len(self.text_tokens):,} train tokens")

    def encode(self, text: str) -> list[int]:
        return self.processor.tokenizer.encode(text, add_special_tokens=False) + [self.eos]

    def text(self) -> dict:
        block = self.cfg.text_block
        starts = self.rng.integers(0, len(self.text_tokens) - block, self.cfg.text_batch)
        rows = [[self.text_marker] + self.text_tokens[s:s + block].tolist() for s in starts]
        return pad_right(rows, [1] * len(rows), self.eos)

    def picture(self, scenes) -> tuple:
        """The next scene, or now and then (`clutter_share`) a picture that is no scene: (image, scene or None)."""
        from ..data.scenes import make_clutter

        if self.py_rng.random() < self.cfg.clutter_share:
            return make_clutter(self.py_rng), None
        scene = next(scenes)
        return scene.image, scene

    def caption_picture(self) -> tuple:
        """`picture` for captions: with `focus_share` set, that share of scenes hold one of `focus_shapes`."""
        image, scene = self.picture(self.scenes)
        if scene is None or not self.cfg.focus_share or self.py_rng.random() >= self.cfg.focus_share:
            return image, scene  # no draw at 0: runs without it draw as before
        while not self.focus_shapes.intersection(o.shape for o in scene.objects):
            scene = next(self.scenes)
        return scene.image, scene

    def ask_picture(self) -> tuple:
        """`picture` for typed questions: with `ask_lone_share` set, a scene of one object that often, else of
        several."""
        image, scene = self.picture(self.ask_scenes)
        if self.cfg.ask_lone_share is None or scene is None:
            return image, scene
        lone = self.py_rng.random() < self.cfg.ask_lone_share
        while (len(scene.objects) == 1) != lone:
            scene = next(self.ask_scenes)
        return scene.image, scene

    def pixels(self, images) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.processor.image_to_pixels(image) for image in images]))

    def caption(self) -> dict:
        from ..data.scenes import UNRECOGNISED_CAPTION

        pictures = [self.caption_picture() for _ in range(self.cfg.image_batch)]
        prompt = self.processor.prompt_ids("caption")
        captions = [scene.caption if scene else UNRECOGNISED_CAPTION for _, scene in pictures]
        batch = pad_right([prompt + self.encode(c) for c in captions], [len(prompt)] * len(captions), self.eos)
        batch["pixel_values"] = self.pixels([image for image, _ in pictures])
        if self.cfg.colour_word_noise:
            batch["input_ids"] = swap_colour_words(batch["input_ids"], self.colour_ids, self.cfg.colour_word_noise,
                                                   self.rng)
        return batch

    def conversation_rows(self, talk, scene, spoken_frames: int = 0,
                          words_learned: bool = True) -> list[tuple[list[int], bool]]:
        """One conversation about `scene` (None: a picture that is no scene) as (ids, learned) segments, every
        answer learned; the last question is spoken when `spoken_frames` is given, and its words heard are learned
        unless `words_learned` is False. Without the last answer, the ids are exactly `processor.ask_ids(...)`:
        training sees the very prompt the app builds."""
        from ..data.questions import described_answer, named_answer
        from ..data.scenes import UNRECOGNISED_CAPTION

        ids = self.processor.token_ids
        seen = scene.caption if scene else UNRECOGNISED_CAPTION
        answers = [named_answer(qa) if self.cfg.named_answers else qa.answer for qa in talk]
        if self.cfg.relation_reasoning:
            answers = [described_answer(qa.reasoning, answer) if qa.reasoning else answer
                       for qa, answer in zip(talk, answers)]
        if self.cfg.describe_first:
            answers = [described_answer(seen, answer) for answer in answers]
        rows = [([ids["<|image|>"]] + [ids["<|patch|>"]] * self.processor.num_patches, False)]
        for qa, answer in zip(talk[:-1], answers):
            rows.append(([ids["<|ask|>"], *self.processor._encode(qa.question), ids["<|answer|>"]], False))
            rows.append((self.encode(answer), True))
        audio = [ids["<|audio|>"]] + [ids["<|frame|>"]] * MMGPTConfig.audio_tokens_for_frames(spoken_frames) \
            if spoken_frames else []
        question = self.processor._encode(talk[-1].question)
        if not spoken_frames:
            rows.append(([ids["<|ask|>"], *question, ids["<|answer|>"]], False))
        elif self.processor.transcribes_spoken_questions:
            rows.append((audio + [ids["<|ask|>"]], False))
            rows.append((question + [ids["<|answer|>"]], words_learned))  # the words heard, learned unless given
        else:
            rows.append((audio + [ids["<|ask|>"], ids["<|answer|>"]], False))
        rows.append((self.encode(answers[-1]), True))
        return rows

    def question_pair(self) -> tuple:
        """A picture of several objects and the same question about two of them (`paired_share`)."""
        from ..data.questions import OBJECT_KINDS, the_same_question_about_two

        for _ in range(1000):
            scene = next(self.ask_scenes)
            pair = the_same_question_about_two(scene, self.py_rng, self.py_rng.choice(OBJECT_KINDS)) \
                if len(scene.objects) > 1 else None
            if pair is not None:
                return scene, pair
        raise RuntimeError("1000 training scenes in a row allowed no pair of questions: do they hold one object?")

    def ask(self) -> dict:
        from ..data.questions import conversation, unrecognised_questions

        rows, images = [], []
        pairs = round(self.cfg.ask_batch * self.cfg.paired_share) // 2
        for _ in range(pairs):
            scene, pair = self.question_pair()
            rows += [self.conversation_rows([qa], scene) for qa in pair]
            images += [scene.image, scene.image]
        for _ in range(self.cfg.ask_batch - 2 * pairs):
            image, scene = self.ask_picture()
            turns = self.py_rng.randint(1, self.cfg.max_turns)
            talk = conversation(scene, self.py_rng, turns) if scene else unrecognised_questions(self.py_rng, turns)
            share = self.cfg.absent_object_share
            if scene and share and self.py_rng.random() < share:  # no draw at 0: runs without it draw as before
                talk[-1] = self.absent_question(scene)
            rows.append(self.conversation_rows(talk, scene))
            images.append(image)
        batch = pad_segments(rows, self.eos)
        batch["pixel_values"] = self.pixels(images)
        return batch

    def absent_question(self, scene):
        """A question about an object `scene` does not hold: a relation question (`absent_relation_share`) where the
        scene allows one, else one about that object alone."""
        from ..data.questions import absent_object_question, absent_relation_question

        share = self.cfg.absent_relation_share
        if share and self.py_rng.random() < share:  # no draw at 0: runs without it draw as before
            if (question := absent_relation_question(scene, self.py_rng)) is not None:
                return question
        return absent_object_question(scene, self.py_rng)

    def spoken_ask(self) -> dict:
        from ..data.scenes import make_scene

        picks = self.rng.integers(0, len(self.spoken_questions), self.cfg.spoken_ask_batch)
        share, pool = self.cfg.swapped_recording_share, len(self.spoken_features)
        rows, images, features = [], [], []
        for i in picks:
            scene_seed, talk, _ = self.spoken_questions[i]
            swapped = share > 0 and self.rng.random() < share  # no draw at 0: runs without it draw as before
            f = self.spoken_features[(i + 1 + self.rng.integers(pool - 1)) % pool if swapped else i]  # another's
            if self.cfg.mel_warp:
                f = warp_frequencies(f, self.rng.uniform(1 - self.cfg.mel_warp, 1 + self.cfg.mel_warp))
            scene = make_scene(random.Random(scene_seed), "train")
            rows.append(self.conversation_rows(talk, scene, spoken_frames=f.shape[1], words_learned=not swapped))
            images.append(scene.image)
            features.append(f)
        batch = pad_segments(rows, self.eos)
        batch["pixel_values"] = self.pixels(images)
        batch["input_features"] = torch.from_numpy(self.pad_features(features))
        return batch

    def transcribe(self) -> dict:
        # With speech_window_batches, clips of similar length pad little (a 1 s command padded to an 8 s caption
        # is mostly silence), but every batch then holds one kind of utterance, and transcription learned slower.
        window = min(len(self.speech), self.cfg.speech_window_batches * self.cfg.audio_batch or len(self.speech))
        start = self.rng.integers(0, len(self.speech) - window + 1)
        picks = [self.speech[start + i] for i in self.rng.integers(0, window, self.cfg.audio_batch)]
        if self.cfg.mel_warp:
            warp = self.cfg.mel_warp
            picks = [(warp_frequencies(f, self.rng.uniform(1 - warp, 1 + warp)), t) for f, t in picks]
        prompts = [self.processor.prompt_ids("transcribe", audio_frames=f.shape[1]) for f, _ in picks]
        batch = pad_right([p + t for p, (_, t) in zip(prompts, picks)], [len(p) for p in prompts], self.eos)
        batch["input_features"] = torch.from_numpy(self.pad_features([f for f, _ in picks]))
        return batch


def spoken_question_pool(cfg: TrainConfig, pool_seed: int) -> list[tuple[int, list, object]]:
    """(scene seed, conversation, spoken last question) triples: the scene is redrawn from its seed when used.

    A share of the last questions (`spoken_absent_object_share`) are about an object the scene does not hold. They are
    drawn from a generator of their own, so that the other triples, and their cached clips, stay as without them."""
    from ..data.questions import absent_object_question, conversation
    from ..data.scenes import make_scene, split_seed
    from ..data.speech import TRAIN_VOICES, render_specs, spoken_form, spoken_spec

    rng = random.Random(split_seed("spoken-questions", pool_seed))
    absent_rng = random.Random(split_seed("spoken-absent-questions", pool_seed))
    entries, specs = [], []
    for _ in range(cfg.spoken_question_pool):
        scene_seed = rng.getrandbits(64)
        scene = make_scene(random.Random(scene_seed), "train")
        talk = conversation(scene, rng, rng.randint(1, cfg.max_turns))
        if absent_rng.random() < cfg.spoken_absent_object_share:
            talk[-1] = absent_object_question(scene, absent_rng)
        entries.append((scene_seed, talk))
        specs.append(spoken_spec(rng, spoken_form(talk[-1].question), "question", TRAIN_VOICES))
    utterances = render_specs(specs, cfg.speech_cache_dir, clean_share=cfg.clean_speech_share,
                              other_voice_share=cfg.other_voice_share)
    return [(seed, talk, u) for (seed, talk), u in zip(entries, utterances)]

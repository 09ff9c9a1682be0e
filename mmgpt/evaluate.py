"""Held-out metrics for mmgpt, each beside its target from issue 14.

`python -m mmgpt evaluate --model assets/mmgpt-tiny --out eval.json` prints the table and writes JSON. Nothing
is measured on data training saw:
- **text:** nats/char on the last 10% of Tiny Shakespeare;
- **captions:** fresh "test" scenes (in-distribution), scenes of the independent renderer `mmgpt.data.heldout`
  (out-of-distribution: other shapes, hues, strokes, backgrounds, picture sizes and artefacts) and the
  "compositional" split (colour+shape pairs training never shows): exact match, BLEU and keyword accuracy; and
  the independent renderer's pictures of one shape drawn big (beyond its own and most of training's sizes);
- **speech:** word error rate per held-out voice (`TEST_VOICES`) on spoken test captions, on the speech set's
  free-form phrases and on the held-out phrase set; plus the speech set's mixed test utterances, clean and at 10 dB;
- **questions:** accuracy per question kind, typed and spoken in held-out voices, for the question set's wording on
  test scenes (in-distribution) and for the held-out wording on held-out scenes (out-of-distribution); and the same
  typed question about each of two objects of a test scene, which shows whether answers follow the object named;
  from a checkpoint that writes a spoken question down before it answers, the WER of those words as well;
- **the checkpoint's size.**

Keyword accuracy (captions). Each object of each reference caption has two keywords, its colour and its shape. The
i-th object the reference names is compared with the i-th object phrase of the generated caption; a phrase is a
colour word with the shape word right after it, or either one alone, found leniently so that a caption outside the
grammar still scores. A keyword is right when the generated phrase at that place has the same word; missing
phrases are wrong, extra ones are ignored (exact match counts them). `keyword_accuracy` is the % of all colour and
shape keywords that are right; `colour_accuracy` and `shape_accuracy` split it, `size_accuracy` does the same for
size words, and `object_accuracy` is the % of objects whose colour and shape are both right. `shape_confusions`
counts which shape was named as which, where the shape is wrong ("star as cross").

Word error rate compares transcripts after `normalize_transcript` (lowercase, no punctuation, number words as
digits), so "forty two" and "42" are the same words.
"""

import inspect
import json
import math
import random
import re
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import jiwer
import numpy as np
import sacrebleu
import torch

from .audio import SAMPLE_RATE
from .data.scenes import COLOURS, SHAPES, SIZES

ANSWER_TOKENS = 48  # a word or two, after the description of the picture when the model gives one first
TRANSCRIPT_TOKENS = 40
MISTAKES_KEPT = 5  # wrong answers quoted per figure in the JSON


@dataclass(frozen=True)
class EvalSizes:
    text_windows: int = 200  # validation windows of `text_block` tokens
    text_block: int = 256
    scenes: int = 400  # per caption split: test, held-out renderer, compositional
    utterances: int = 200  # mixed test utterances (captions, numbers, commands) per SNR condition
    per_voice: int = 60  # spoken captions, and phrases of each phrase set, per held-out voice
    questions: int = 40  # per question kind, for each wording (in-distribution, held-out), typed and spoken
    batch: int = 50


# --- scoring --------------------------------------------------------------------------------------------------


def text_nats_per_char(model, processor, text: str, windows: int, block: int) -> float:
    """Summed next-token NLL over evenly spaced windows of `text`, divided by the characters those tokens span."""
    tokenizer = processor.tokenizer
    ids = tokenizer.encode(text, add_special_tokens=False)
    starts = np.linspace(0, len(ids) - block - 1, windows).astype(int)
    marker = processor.token_ids["<|text|>"]
    total_nll, total_chars = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in starts:
            window = ids[start:start + block]
            input_ids = torch.tensor([[marker] + window])
            logits = model(input_ids=input_ids).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, input_ids[0, 1:], reduction="sum")
            total_nll += nll.item()
            total_chars += len(tokenizer.decode(window))
    return total_nll / total_chars


def greedy_texts(model, processor, batches, max_new_tokens: int, ends: list[int] | None = None) -> list[str]:
    """Greedy answers for an iterable of processor batches; each ends at end-of-text, or, when `ends` is given, at
    any of those tokens instead (`MMGPTProcessor.heard_question_ends` holds end-of-text too)."""
    outputs = []
    model.eval()
    stops = {"eos_token_id": ends} if ends else {}
    with torch.no_grad():
        for inputs in batches:
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **stops)
            new_tokens = generated[:, inputs["input_ids"].shape[1]:]
            outputs += [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return outputs


def _chunks(items: list, size: int):
    return (items[i:i + size] for i in range(0, len(items), size))


def _percent(hits) -> float:
    hits = list(hits)
    return 100.0 * sum(hits) / len(hits) if hits else float("nan")


def object_phrases(text: str) -> list[tuple[str | None, str | None, str | None]]:
    """(size, colour, shape) of each object phrase in `text`, in order; None where a word is missing.

    A phrase is a colour word with the shape word right after it, or either word alone; a size word just before
    it is its size. Lenient on purpose: "circle circle" is two phrases with no colour.
    """
    words = re.findall(r"[a-z]+", text.lower())
    phrases, i = [], 0
    while i < len(words):
        word = words[i]
        size = words[i - 1] if i > 0 and words[i - 1] in SIZES else None
        if word in COLOURS:
            shape = words[i + 1] if i + 1 < len(words) and words[i + 1] in SHAPES else None
            phrases.append((size, word, shape))
            i += 2 if shape else 1
            continue
        if word in SHAPES:
            phrases.append((size, None, word))
        i += 1
    return phrases


def said_of_each_object(scene, hypothesis: str) -> list[tuple]:
    """Per reference object: (object, the (size, colour, shape) of the phrase at its place in `hypothesis`), with
    None for words missing there."""
    generated = object_phrases(hypothesis)
    return [(obj, generated[i] if i < len(generated) else (None, None, None)) for i, obj in enumerate(scene.objects)]


def keyword_hits(scene, hypothesis: str) -> list[dict[str, bool]]:
    """Per reference object: whether its size, colour and shape words are right at its place in `hypothesis`."""
    return [{"size": size == obj.size, "colour": colour == obj.colour, "shape": shape == obj.shape}
            for obj, (size, colour, shape) in said_of_each_object(scene, hypothesis)]


def shape_confusions(scenes, hypotheses: list[str]) -> dict[str, int]:
    """How often each shape was named as another at its place in the caption ("star as cross": 11), most frequent
    first; "as nothing" where the caption has no shape word there. Only objects whose shape is wrong count."""
    counts = Counter(f"{obj.shape} as {said or 'nothing'}"
                     for scene, hypothesis in zip(scenes, hypotheses)
                     for obj, (_, _, said) in said_of_each_object(scene, hypothesis) if said != obj.shape)
    return dict(counts.most_common())


def _keyword_figures(hits: list[dict[str, bool]]) -> dict:
    return {
        "keyword_accuracy": _percent([h["colour"] for h in hits] + [h["shape"] for h in hits]),
        "colour_accuracy": _percent(h["colour"] for h in hits),
        "shape_accuracy": _percent(h["shape"] for h in hits),
        "size_accuracy": _percent(h["size"] for h in hits),
        "object_accuracy": _percent(h["colour"] and h["shape"] for h in hits),
    }


def caption_scores(model, processor, scenes, batch: int = 50, object_groups: dict | None = None) -> dict:
    """Exact match (%), corpus BLEU and keyword accuracies (module docstring) of greedy captions of `scenes`.

    object_groups: {name: one label list per scene, one label per object}, e.g. {"style": [["outlined"], ...]},
    adds `by_NAME: {label: keyword figures}` for those groups.
    """
    batches = (processor(images=[s.image for s in chunk]) for chunk in _chunks(scenes, batch))
    hypotheses = greedy_texts(model, processor, batches, max_new_tokens=TRANSCRIPT_TOKENS)
    references = [s.caption for s in scenes]
    hits = [keyword_hits(s, h) for s, h in zip(scenes, hypotheses)]
    result = {
        "exact_match": _percent(h == r for h, r in zip(hypotheses, references)),
        "bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
        **_keyword_figures([h for scene_hits in hits for h in scene_hits]),
        "n": len(scenes),
        "examples": list(zip(references[:3], hypotheses[:3])),
        "mistakes": [(r, h) for r, h in zip(references, hypotheses) if r != h][:MISTAKES_KEPT],
        "shape_confusions": shape_confusions(scenes, hypotheses),
    }
    for name, labels in (object_groups or {}).items():
        grouped = defaultdict(list)
        for scene_labels, scene_hits in zip(labels, hits):
            for label, hit in zip(scene_labels, scene_hits):
                grouped[label].append(hit)
        result[f"by_{name}"] = {label: {**_keyword_figures(group), "n": len(group)}
                                for label, group in sorted(grouped.items())}
    return result


_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}


def _read_number(words: list[str], i: int) -> tuple[int, int]:
    """(value, words used) of the number words starting at `words[i]`, up to 999; (0, 0) if none start there."""
    value, used = 0, 0
    if i + 1 < len(words) and words[i] in _UNITS and 0 < _UNITS[words[i]] < 10 and words[i + 1] == "hundred":
        value, used = 100 * _UNITS[words[i]], 2
        if i + used + 1 < len(words) and words[i + used] == "and" and (
                words[i + used + 1] in _UNITS or words[i + used + 1] in _TENS):
            used += 1
    j = i + used
    if j < len(words) and words[j] in _TENS:
        value, used = value + _TENS[words[j]], used + 1
        if j + 1 < len(words) and words[j + 1] in _UNITS and 0 < _UNITS[words[j + 1]] < 10:
            value, used = value + _UNITS[words[j + 1]], used + 1
    elif j < len(words) and words[j] in _UNITS and (used == 0 or _UNITS[words[j]] > 0):
        value, used = value + _UNITS[words[j]], used + 1
    return value, used


def normalize_transcript(text: str) -> str:
    """Lowercase, punctuation dropped (hyphens split words), number words written as digits."""
    words = re.sub(r"[^\w\s']", " ", text.lower()).split()
    out, i = [], 0
    while i < len(words):
        value, used = _read_number(words, i)
        out.append(str(value) if used else words[i])
        i += used or 1
    return " ".join(out)


def _wer(references: list[str], hypotheses: list[str]) -> float:
    references = [normalize_transcript(r) for r in references]
    hypotheses = [normalize_transcript(h) or "<empty>" for h in hypotheses]
    return 100.0 * jiwer.wer(references, hypotheses)


def transcription_scores(model, processor, utterances, batch: int = 50, groups: dict | None = None) -> dict:
    """Word error rate (%) of greedy transcripts of `utterances` against the spoken text.

    groups: {name: one label per utterance}, e.g. {"voice": [...]}, adds `by_NAME: {label: {"wer", "n"}}`.
    """
    batches = (processor(audio=[u.waveform for u in chunk], sampling_rate=SAMPLE_RATE)
               for chunk in _chunks(utterances, batch))
    hypotheses = greedy_texts(model, processor, batches, max_new_tokens=TRANSCRIPT_TOKENS)
    references = [u.transcript for u in utterances]
    result = {
        "wer": _wer(references, hypotheses), "n": len(utterances),
        "examples": list(zip(references[:3], hypotheses[:3])),
        "mistakes": [(r, h) for r, h in zip(references, hypotheses)
                     if normalize_transcript(r) != normalize_transcript(h)][:MISTAKES_KEPT],
    }
    for name, labels in (groups or {}).items():
        grouped = defaultdict(lambda: ([], []))
        for label, reference, hypothesis in zip(labels, references, hypotheses):
            grouped[label][0].append(reference)
            grouped[label][1].append(hypothesis)
        result[f"by_{name}"] = {label: {"wer": _wer(refs, hyps), "n": len(refs)}
                                for label, (refs, hyps) in sorted(grouped.items())}
    return result


# --- speech in held-out voices -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Spoken:
    """A text spoken in a held-out voice, as the speech set levels and pads its clips (no noise)."""

    waveform: np.ndarray  # float32 (n_samples,) at 16 kHz
    transcript: str
    voice: str


def speak(texts: list[str], voices: list[str], seed: int, cache_dir=None, workers: int = 2) -> list[Spoken]:
    """`texts[i]` spoken in `voices[i]`, at a random speed, pitch, level and silence padding from the speech set's
    ranges (the same for the same seed)."""
    from .data.speech import PEAK_LEVEL, PITCH, SILENCE_SECONDS, SPEED_WPM, synthesize

    rng = random.Random(seed)
    settings = [(text, voice, rng.randint(*SPEED_WPM), rng.randint(*PITCH)) for text, voice in zip(texts, voices)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        clips = list(pool.map(lambda s: synthesize(*s, cache_dir=cache_dir), settings))
    spoken = []
    for (text, voice, _, _), clip in zip(settings, clips):
        lead, trail = (np.zeros(int(rng.uniform(*SILENCE_SECONDS) * SAMPLE_RATE), np.float32) for _ in range(2))
        level = rng.uniform(*PEAK_LEVEL) / max(float(np.abs(clip).max()), 1e-9)
        spoken.append(Spoken(np.concatenate([lead, clip * level, trail]).astype(np.float32), text, voice))
    return spoken


def per_voice_scores(model, processor, texts: list[str], seed: int, cache_dir, batch: int) -> dict:
    """WER of `texts` spoken in every held-out voice, overall and per voice."""
    from .data.speech import TEST_VOICES

    voices = [voice for voice in TEST_VOICES for _ in texts]
    spoken = speak(texts * len(TEST_VOICES), voices, seed, cache_dir)
    return transcription_scores(model, processor, spoken, batch, groups={"voice": voices})


def speech_set_phrases(model, processor, n: int, seed: int, cache_dir, batch: int) -> dict:
    """WER per held-out voice on the speech set's own free-form phrases, if this version of it has them."""
    from .data.speech import speech_dataset

    if "kinds" not in inspect.signature(speech_dataset).parameters:
        return _unavailable("mmgpt.data.speech.speech_dataset has no `kinds` argument (no free-form phrases yet)")
    utterances = speech_dataset("test", n, seed, cache_dir, snr_db=math.inf, kinds=("phrase",))
    if not utterances or any(getattr(u, "kind", "") != "phrase" for u in utterances):
        return _unavailable("mmgpt.data.speech.speech_dataset(kinds=('phrase',)) returned utterances of other kinds")
    return transcription_scores(model, processor, utterances, batch, groups={"voice": [u.voice for u in utterances]})


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


# --- questions -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Asked:
    """A question about a picture, with its right answer; spoken when `waveform` is set."""

    image: object  # PIL.Image.Image
    kind: str
    question: str
    answer: str
    waveform: np.ndarray | None = None
    voice: str | None = None
    objects: int | None = None  # how many objects the picture holds


def greedy_answers(model, processor, asked: list[Asked], batch: int) -> tuple[list[str], list[str] | None]:
    """The greedy answer to each of `asked` (all typed or all spoken), and, from a checkpoint that writes a spoken
    question's words before it answers (`transcribes_spoken_questions`), the words it heard (else None)."""
    spoken = asked[0].waveform is not None
    heard = heard_questions(model, processor, asked, batch) if spoken else None
    # The words each prompt holds: typed, written down, or none (answered from the audio alone).
    questions = heard if heard is not None else (None if spoken else [a.question for a in asked])
    # Words written down as nothing get no answer, as in the app, which says it heard no question.
    kept = [i for i in range(len(asked)) if heard is None or heard[i].strip()]

    def inputs(rows: list[int]):
        return processor(images=[asked[i].image for i in rows],
                         text=None if questions is None else [questions[i] for i in rows],
                         audio=[asked[i].waveform for i in rows] if spoken else None, sampling_rate=SAMPLE_RATE,
                         task="ask")

    answers = dict(zip(kept, greedy_texts(model, processor, (inputs(rows) for rows in _chunks(kept, batch)),
                                          ANSWER_TOKENS)))
    return [answers.get(i, "") for i in range(len(asked))], heard


def heard_questions(model, processor, asked: list[Asked], batch: int) -> list[str] | None:
    """What a checkpoint that `transcribes_spoken_questions` writes of each spoken question before `<|answer|>`,
    with the picture before it, as the app prompts it; None for a checkpoint that answers from the audio."""
    if not getattr(processor, "transcribes_spoken_questions", False):
        return None
    batches = (processor(images=[a.image for a in c], audio=[a.waveform for a in c], sampling_rate=SAMPLE_RATE,
                         task="ask") for c in _chunks(asked, batch))
    return greedy_texts(model, processor, batches, TRANSCRIPT_TOKENS, ends=processor.heard_question_ends)


def answer_scores(model, processor, asked: list[Asked], batch: int, is_right) -> dict:
    """Accuracy (%) of greedy answers to `asked` (all typed or all spoken), overall, per kind and per voice.

    is_right(predicted, truth) -> bool decides each answer.
    """
    spoken = asked[0].waveform is not None
    predicted, heard = greedy_answers(model, processor, asked, batch)
    right = [bool(is_right(p, a.answer)) for p, a in zip(predicted, asked)]
    by_kind, by_voice, by_objects = defaultdict(list), defaultdict(list), defaultdict(list)
    for a, ok in zip(asked, right):
        by_kind[a.kind].append(ok)
        if spoken:
            by_voice[a.voice].append(ok)
        if a.objects:
            by_objects[str(a.objects)].append(ok)
    result = {
        "available": True, "accuracy": _percent(right), "n": len(asked),
        "by_kind": {kind: {"accuracy": _percent(oks), "n": len(oks)} for kind, oks in by_kind.items()},
        # About one object a question is answered without finding its object; among several, only by finding it.
        "by_objects": {n: {"accuracy": _percent(oks), "n": len(oks)} for n, oks in sorted(by_objects.items())},
        "mistakes": [(a.kind, a.question, a.answer, p) for a, p, ok in zip(asked, predicted, right)
                     if not ok][:MISTAKES_KEPT],
    }
    if spoken:
        result["by_voice"] = {voice: {"accuracy": _percent(oks), "n": len(oks)}
                              for voice, oks in sorted(by_voice.items())}
    if heard is not None:  # how well the question was heard, apart from how well it was answered
        result["heard_wer"] = _wer([a.question for a in asked], heard)
        result["mistakes"] = [(a.kind, a.question, a.answer, p, h)  # the words written down come last
                              for a, h, p, ok in zip(asked, heard, predicted, right) if not ok][:MISTAKES_KEPT]
    return result


def paired_questions(scenes, per_kind: int, seed: int) -> list[tuple[Asked, Asked]]:
    """`per_kind` pairs of each one-object kind: the same question about two objects of a scene, with different
    answers (`questions.the_same_question_about_two`)."""
    from .data import questions

    rng = random.Random(seed)
    pairs = []
    for kind in questions.OBJECT_KINDS:
        found = 0
        for scene in scenes:
            if found >= per_kind:
                break
            pair = questions.the_same_question_about_two(scene, rng, kind) if len(scene.objects) > 1 else None
            if pair is not None:
                pairs.append(tuple(Asked(scene.image, qa.kind, qa.question, qa.answer, objects=len(scene.objects))
                                   for qa in pair))
                found += 1
    return pairs


def pair_figures(pairs: list[tuple[Asked, Asked]], predicted: list[tuple[str, str]], is_right) -> dict:
    """How answers follow the object a question names: `both_right`, the % of pairs whose two answers are both
    right, and `answers_differ`, the % whose two answers differ at all (a model that reads the picture but not the
    name says the same for both: 0), overall and per kind."""
    from .data.questions import normalize_answer

    def summary(items) -> dict:
        return {"both_right": _percent(is_right(pa, a.answer) and is_right(pb, b.answer) for (a, b), (pa, pb) in items),
                "answers_differ": _percent(normalize_answer(pa) != normalize_answer(pb) for _, (pa, pb) in items),
                "n": len(items)}

    items = list(zip(pairs, predicted))
    by_kind = defaultdict(list)
    for item in items:
        by_kind[item[0][0].kind].append(item)
    return {"available": True, **summary(items), "by_kind": {kind: summary(group) for kind, group in by_kind.items()},
            "mistakes": [(a.question, a.answer, pa, b.question, b.answer, pb) for (a, b), (pa, pb) in items
                         if not (is_right(pa, a.answer) and is_right(pb, b.answer))][:MISTAKES_KEPT]}


def paired_scores(model, processor, pairs: list[tuple[Asked, Asked]], batch: int, is_right) -> dict:
    """`pair_figures` of the greedy answers to `pairs`; not available when there are none."""
    if not pairs:
        return _unavailable("no test scene has two objects that one question tells apart")
    answers, _ = greedy_answers(model, processor, [asked for pair in pairs for asked in pair], batch)
    return pair_figures(pairs, list(zip(answers[0::2], answers[1::2])), is_right)


def in_distribution_questions(scenes, per_kind: int, seed: int) -> list[Asked]:
    """`per_kind` questions of each kind from the question set (`mmgpt.data.questions`) about `scenes`."""
    from .data import questions

    rng = random.Random(seed)
    asked = []
    for k, kind in enumerate(questions.QUESTION_KINDS):
        for attempt in range(10 * per_kind):
            if sum(a.kind == kind for a in asked) == per_kind:
                break
            scene = scenes[(k * per_kind + attempt) % len(scenes)]
            try:
                qa = questions.ask_about(scene, rng, kind)
            except ValueError:  # no question of this kind fits this scene
                continue
            if qa is not None:
                asked.append(Asked(scene.image, qa.kind, qa.question, qa.answer, objects=len(scene.objects)))
    return asked


def heldout_wording_questions(scenes, per_kind: int, seed: int) -> list[Asked]:
    """`per_kind` questions of each kind in the held-out wording (`mmgpt.data.heldout`) about `scenes`."""
    from .data.heldout import heldout_questions

    return [Asked(scene.image, q.kind, q.question, q.answer, objects=len(scene.objects))
            for scene, q in heldout_questions(scenes, per_kind, seed)]


def spoken_versions(asked: list[Asked], seed: int, cache_dir) -> list[Asked]:
    """The same questions, spoken in the held-out voices in turn."""
    from .data.speech import TEST_VOICES

    voices = [TEST_VOICES[i % len(TEST_VOICES)] for i in range(len(asked))]
    clips = speak([a.question for a in asked], voices, seed, cache_dir)
    return [replace(a, waveform=c.waveform, voice=c.voice) for a, c in zip(asked, clips)]


def question_scores(model, processor, test_scenes, heldout_scenes, sizes: EvalSizes, seed: int, cache_dir) -> dict:
    """qa_typed, qa_spoken (question set's wording, test scenes), qa_heldout_typed, qa_heldout_spoken and qa_paired."""
    keys = (*QA_SETS, "qa_paired")
    if not getattr(processor, "can_ask", False):
        return dict.fromkeys(keys, _unavailable("this checkpoint cannot take questions (no <|ask|> token: "
                                                "trained before mmgpt-tiny v4)"))
    from .data.questions import answer_is_right

    results = {}
    for prefix, asked in (("qa", in_distribution_questions(test_scenes, sizes.questions, seed)),
                          ("qa_heldout", heldout_wording_questions(heldout_scenes, sizes.questions, seed))):
        results[f"{prefix}_typed"] = answer_scores(model, processor, asked, sizes.batch, answer_is_right)
        results[f"{prefix}_spoken"] = answer_scores(model, processor, spoken_versions(asked, seed, cache_dir),
                                                    sizes.batch, answer_is_right)
    # The held-out questions are typed as people type them, capitalized; the same in lowercase (as the question
    # set writes its own) tells wording apart from capitals when the figure falls short.
    lowercase = [replace(a, question=a.question.lower()) for a in heldout_wording_questions(heldout_scenes,
                                                                                             sizes.questions, seed)]
    results["qa_heldout_typed_lowercase"] = answer_scores(model, processor, lowercase, sizes.batch, answer_is_right)
    results["qa_paired"] = paired_scores(model, processor, paired_questions(test_scenes, sizes.questions, seed),
                                         sizes.batch, answer_is_right)
    return results


# --- the whole evaluation ---------------------------------------------------------------------------------------


def decode_tokens_per_second(model, processor, new_tokens: int = 64) -> float:
    """Greedy decode speed, batch 1, from a short text prompt, forcing `new_tokens` tokens."""
    inputs = processor(text="ROMEO:")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=4, do_sample=False)  # warm-up
        start = time.perf_counter()
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return new_tokens / (time.perf_counter() - start)


def checkpoint_megabytes(model_dir: str | Path) -> float:
    """MiB of the files that ship (weights, configs, tokenizer), as the shipped-model test counts them."""
    from .ship import SHIPPED_FILES

    return sum((Path(model_dir) / name).stat().st_size for name in SHIPPED_FILES
               if (Path(model_dir) / name).is_file()) / 2**20


def evaluate(model_dir: str, text_path: str | None, out_json: str | None, sizes: EvalSizes = EvalSizes(),
             seed: int = 1234, cache_dir: str | None = None) -> dict:
    from transformers import AutoModelForCausalLM, AutoProcessor

    from .data import load_shakespeare, scene_dataset, speech_dataset, split_text
    from .data.heldout import heldout_drawings
    from .data.scenes import example_captions

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    _, validation_text = split_text(load_shakespeare(text_path))
    test_scenes = scene_dataset("test", sizes.scenes, seed)
    drawings = heldout_drawings(sizes.scenes, seed)
    heldout_scenes = [d.scene for d in drawings]
    results = {
        "model": str(model_dir), "seed": seed, "sizes": asdict(sizes),
        "text_nats_per_char": text_nats_per_char(model, processor, validation_text, sizes.text_windows,
                                                 sizes.text_block),
        "caption_test": caption_scores(model, processor, test_scenes, sizes.batch),
        "caption_heldout": caption_scores(model, processor, heldout_scenes, sizes.batch, object_groups={
            "background": [[d.background.split(",")[0]] * len(d.styles) for d in drawings],
            "finish": [[d.background.split(", ")[1]] * len(d.styles) for d in drawings],
            "style": [list(d.styles) for d in drawings],
        }),
        "caption_compositional": caption_scores(
            model, processor, scene_dataset("compositional", sizes.scenes, seed), sizes.batch),
        "caption_heldout_big": caption_scores(
            model, processor, [d.scene for d in heldout_drawings(sizes.scenes, seed, big=True)], sizes.batch),
    }
    for key, snr in (("speech_clean", math.inf), ("speech_10db", 10.0)):
        utterances = speech_dataset("test", sizes.utterances, seed, cache_dir, snr_db=snr)
        results[key] = transcription_scores(model, processor, utterances, sizes.batch, groups={
            "voice": [u.voice for u in utterances], "kind": [u.kind for u in utterances]})
    captions = [c.replace(",", "") for c in example_captions(sizes.per_voice, seed, split="test")]
    results["speech_captions"] = per_voice_scores(model, processor, captions, seed, cache_dir, sizes.batch)
    results["speech_phrases"] = speech_set_phrases(model, processor, sizes.per_voice * 3, seed, cache_dir,
                                                   sizes.batch)
    from .data.heldout import heldout_phrases

    results["speech_phrases_heldout"] = per_voice_scores(
        model, processor, heldout_phrases(sizes.per_voice, seed), seed, cache_dir, sizes.batch)
    results.update(question_scores(model, processor, test_scenes, heldout_scenes, sizes, seed, cache_dir))
    results["checkpoint_mb"] = checkpoint_megabytes(model_dir)
    results["decode_tokens_per_s"] = decode_tokens_per_second(model, processor)
    results["eval_seconds"] = time.perf_counter() - started
    print(format_table(results))
    if out_json:
        Path(out_json).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results


# --- targets and the table --------------------------------------------------------------------------------------

# nanoGPT's published Tiny Shakespeare validation losses, for the model card's comparison column.
REFERENCE_TEXT_NATS = {"nanoGPT baby GPT (CPU, 0.8M)": 1.88, "nanoGPT shakespeare_char (GPU, 10.7M)": 1.4697}

# Issue 14's targets: (comparison, value). A per-voice or per-kind figure takes the target of its whole.
TARGETS = {
    "caption_test.exact_match": (">=", 98.0),
    "caption_heldout.keyword_accuracy": (">=", 95.0),
    "caption_compositional.exact_match": (">=", 80.0),
    "speech_clean.wer": ("<=", 5.0),
    "speech_captions.wer": ("<=", 5.0),
    "speech_phrases.wer": ("<=", 5.0),
    "speech_phrases_heldout.wer": ("<=", 5.0),
    "qa_typed.accuracy": (">=", 90.0),
    "qa_heldout_typed.accuracy": (">=", 90.0),
    "qa_spoken.accuracy": (">=", 85.0),
    "qa_heldout_spoken.accuracy": (">=", 85.0),
    "text_nats_per_char": ("<=", 1.69),
    "checkpoint_mb": ("<=", 40.0),
}

CAPTION_SETS = {"caption_test": "test scenes", "caption_heldout": "held-out renderer",
                "caption_compositional": "compositional split",
                "caption_heldout_big": "held-out renderer, one big shape"}  # not in evaluations before v4.3
CAPTION_FIGURES = {"exact_match": "exact match, %", "keyword_accuracy": "keyword accuracy, %",
                   "colour_accuracy": "colour accuracy, %", "shape_accuracy": "shape accuracy, %",
                   "size_accuracy": "size accuracy, %", "bleu": "BLEU"}
SPEECH_SETS = {"speech_captions": "spoken test captions", "speech_phrases": "speech set's phrases",
               "speech_phrases_heldout": "held-out phrases", "speech_clean": "mixed test utterances, clean",
               "speech_10db": "mixed test utterances, 10 dB SNR"}
# The same typed question about each of two objects of a test scene (`paired_questions`); older evaluations lack it.
PAIRED_FIGURES = {"both_right": "both answers right, %", "answers_differ": "the two answers differ, %"}
QA_SETS = {"qa_typed": "typed, question set's wording", "qa_heldout_typed": "typed, held-out wording",
           "qa_heldout_typed_lowercase": "typed, held-out wording in lowercase",
           "qa_spoken": "spoken, question set's wording", "qa_heldout_spoken": "spoken, held-out wording"}


@dataclass(frozen=True)
class Figure:
    key: str  # where it is in the results, e.g. "speech_captions.by_voice.en-029+m7.wer"
    label: str
    value: float | None  # None: not measured (see `note`)
    target: tuple[str, float] | None = None  # (">=" or "<=", value) from TARGETS
    note: str = ""
    decimals: int = 1  # shown with this many decimals

    @property
    def shown(self) -> str:
        return "not available" if self.value is None else f"{self.value:.{self.decimals}f}"

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None or math.isnan(self.value):
            return None
        op, goal = self.target
        return self.value >= goal if op == ">=" else self.value <= goal

    @property
    def shortfall(self) -> float | None:
        """How far the value misses its target, in the figure's own units (None when met or not measured)."""
        if self.met is not False:
            return None
        return abs(self.value - self.target[1])


def figures(results: dict) -> list[Figure]:
    """Every figure of `results`, in table order, each with its target (if it has one)."""
    rows = [Figure("text_nats_per_char", "Text: Tiny Shakespeare validation, nats/char",
                   results["text_nats_per_char"], TARGETS["text_nats_per_char"], decimals=3)]
    for key, name in CAPTION_SETS.items():
        if key not in results:
            continue
        for field, label in CAPTION_FIGURES.items():
            rows.append(Figure(f"{key}.{field}", f"Captions, {name}: {label}", results[key][field],
                               TARGETS.get(f"{key}.{field}")))
        for group in ("background", "finish", "style"):
            for label, figure in results[key].get(f"by_{group}", {}).items():
                rows.append(Figure(f"{key}.by_{group}.{label}.keyword_accuracy",
                                   f"Captions, {name}, {group} {label}: keyword accuracy, %",
                                   figure["keyword_accuracy"], TARGETS.get(f"{key}.keyword_accuracy")))
    for key, name in SPEECH_SETS.items():
        rows += _grouped_rows(results.get(key), key, f"Speech, {name}: WER, %", "wer", ("voice", "kind"))
    for key, name in QA_SETS.items():
        rows += _grouped_rows(results.get(key), key, f"Questions, {name}: accuracy, %", "accuracy",
                              ("kind", "voice", "objects"))
    for key, name in QA_SETS.items():  # from checkpoints that write a spoken question down before answering
        if "heard_wer" in (results.get(key) or {}):
            rows.append(Figure(f"{key}.heard_wer", f"Questions, {name}: the question's words as written down, WER, %",
                               results[key]["heard_wer"]))
    if "qa_paired" in results:
        for field, label in PAIRED_FIGURES.items():
            rows += _grouped_rows(results["qa_paired"], "qa_paired",
                                  f"Questions, the same one about each of two objects: {label}", field, ("kind",))
    rows.append(Figure("checkpoint_mb", "Checkpoint, MiB", results["checkpoint_mb"], TARGETS["checkpoint_mb"]))
    rows.append(Figure("decode_tokens_per_s", "Decode speed, tokens/s (batch 1)", results["decode_tokens_per_s"],
                       decimals=0))
    return rows


def _grouped_rows(result: dict | None, key: str, label: str, field: str, groups: tuple[str, ...]) -> list[Figure]:
    target = TARGETS.get(f"{key}.{field}")
    if result is None or not result.get("available", True):
        reason = "not measured" if result is None else result["reason"]
        return [Figure(f"{key}.{field}", label, None, target, reason)]
    rows = [Figure(f"{key}.{field}", label, result[field], target)]
    whole, measure = label.split(": ", 1)
    for group in groups:
        for name, figure in result.get(f"by_{group}", {}).items():
            rows.append(Figure(f"{key}.by_{group}.{name}.{field}", f"{whole}, {group} {name}: {measure}",
                               figure[field], target))
    return rows


def format_target(target: tuple[str, float] | None) -> str:
    return "" if target is None else f"{'≥' if target[0] == '>=' else '≤'} {target[1]:g}"


def format_table(results: dict) -> str:
    rows = [("figure", "value", "target", "met")]
    for figure in figures(results):
        met = {True: "yes", False: "NO", None: ""}[figure.met]
        rows.append((figure.label, figure.shown, format_target(figure.target), met))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    notes = {f.note for f in figures(results) if f.note}
    return "\n".join(lines + [f"not available: {note}" for note in sorted(notes)])

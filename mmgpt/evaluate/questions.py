"""Question figures: accuracy of greedy answers to typed and spoken questions about pictures, per kind, voice and
number of objects; the same question about each of two objects of a scene; and, from a checkpoint that writes a
spoken question down before it answers, the WER of those words."""

import random
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from ..audio import SAMPLE_RATE
from .common import (ANSWER_TOKENS, MISTAKES_KEPT, TRANSCRIPT_TOKENS, EvalSizes, _chunks, _percent, _unavailable,
                     greedy_texts)
from .report import QA_SETS
from .speech import _wer, speak


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
    from ..data.questions import says_absent

    result = {
        "available": True, "accuracy": _percent(right), "n": len(asked),
        # Answers saying "there is no ...": about objects that are there, wrong ones, so saying it too readily shows
        "said_absent": _percent(says_absent(p) for p in predicted),
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
    from ..data import questions

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
    from ..data.questions import normalize_answer

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
    from ..data import questions

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
    from ..data.heldout import heldout_questions

    return _asked(heldout_questions(scenes, per_kind, seed))


def absent_object_questions(scenes, per_kind: int, seed: int) -> list[Asked]:
    """`per_kind` questions of each one-object kind in the held-out wording about objects not in `scenes`."""
    from ..data.heldout import heldout_absent_questions

    return _asked(heldout_absent_questions(scenes, per_kind, seed))


def _asked(pairs) -> list[Asked]:
    """(scene, `HeldOutQuestion`) pairs as typed questions about the scenes' pictures."""
    return [Asked(scene.image, q.kind, q.question, q.answer, objects=len(scene.objects)) for scene, q in pairs]


def spoken_versions(asked: list[Asked], seed: int, cache_dir, held_out_voices: tuple[str, ...] | None = None
                    ) -> list[Asked]:
    """The same questions, spoken in the held-out voices (None: `TEST_VOICES`) in turn."""
    from ..data.speech import TEST_VOICES

    held_out_voices = held_out_voices or TEST_VOICES
    voices = [held_out_voices[i % len(held_out_voices)] for i in range(len(asked))]
    clips = speak([a.question for a in asked], voices, seed, cache_dir)
    return [replace(a, waveform=c.waveform, voice=c.voice) for a, c in zip(asked, clips)]


def question_scores(model, processor, test_scenes, heldout_scenes, sizes: EvalSizes, seed: int, cache_dir) -> dict:
    """qa_typed, qa_spoken (question set's wording, test scenes), qa_heldout_typed, qa_heldout_spoken, qa_absent,
    qa_absent_spoken (held-out wording about objects the held-out scenes do not hold) and qa_paired."""
    keys = (*QA_SETS, "qa_paired")
    if not getattr(processor, "can_ask", False):
        return dict.fromkeys(keys, _unavailable("this checkpoint cannot take questions (no <|ask|> token: "
                                                "trained before mmgpt-tiny v4)"))
    from ..data.questions import answer_is_right

    results = {}
    in_distribution = in_distribution_questions(test_scenes, sizes.questions, seed)
    for prefix, asked in (("qa", in_distribution),
                          ("qa_heldout", heldout_wording_questions(heldout_scenes, sizes.questions, seed))):
        results[f"{prefix}_typed"] = answer_scores(model, processor, asked, sizes.batch, answer_is_right)
        results[f"{prefix}_spoken"] = answer_scores(model, processor, spoken_versions(asked, seed, cache_dir),
                                                    sizes.batch, answer_is_right)
    from ..data.speech import OTHER_TEST_VOICES
    from .speech import other_voices_unavailable

    results["qa_spoken_other_voices"] = other_voices_unavailable() or answer_scores(
        model, processor, spoken_versions(in_distribution, seed, cache_dir, OTHER_TEST_VOICES), sizes.batch,
        answer_is_right)
    # The held-out questions are typed as people type them, capitalized; the same in lowercase (as the question
    # set writes its own) tells wording apart from capitals when the figure falls short.
    lowercase = [replace(a, question=a.question.lower()) for a in heldout_wording_questions(heldout_scenes,
                                                                                             sizes.questions, seed)]
    results["qa_heldout_typed_lowercase"] = answer_scores(model, processor, lowercase, sizes.batch, answer_is_right)
    # Right when it says that the object asked about is not there; said_absent counts any "there is no ..."
    absent = absent_object_questions(heldout_scenes, sizes.questions, seed)
    results["qa_absent"] = answer_scores(model, processor, absent, sizes.batch, answer_is_right)
    results["qa_absent_spoken"] = answer_scores(model, processor, spoken_versions(absent, seed, cache_dir),
                                                sizes.batch, answer_is_right)
    results["qa_paired"] = paired_scores(model, processor, paired_questions(test_scenes, sizes.questions, seed),
                                         sizes.batch, answer_is_right)
    return results

"""Caption figures: exact match, BLEU and keyword accuracy of greedy captions, and which shapes are named as
which.

Keyword accuracy (captions). Each object of each reference caption has two keywords, its colour and its shape. The
i-th object the reference names is compared with the i-th object phrase of the generated caption; a phrase is a
colour word with the shape word right after it, or either one alone, found leniently so that a caption outside the
grammar still scores. A keyword is right when the generated phrase at that place has the same word; missing
phrases are wrong, extra ones are ignored (exact match counts them). `keyword_accuracy` is the % of all colour and
shape keywords that are right; `colour_accuracy` and `shape_accuracy` split it, `size_accuracy` does the same for
size words, and `object_accuracy` is the % of objects whose colour and shape are both right. `shape_confusions`
counts which shape was named as which, where the shape is wrong ("star as cross").
"""

import re
from collections import Counter, defaultdict

import sacrebleu

from ..data.scenes import COLOURS, SHAPES, SIZES
from .common import MISTAKES_KEPT, TRANSCRIPT_TOKENS, _chunks, _percent, greedy_texts


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

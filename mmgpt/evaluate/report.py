"""Targets and the table: issue 14's target for each figure, the sets and figures the table shows, `Figure` (a
value beside its target) and the printed table; the model card (`mmgpt.ship`) reads the same figures."""

import math
from dataclasses import dataclass

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
    # The same targets for the held-out voices of synthesizers other than espeak-ng (`speech.OTHER_TEST_VOICES`)
    "speech_captions_other_voices.wer": ("<=", 5.0),
    "speech_phrases_other_voices.wer": ("<=", 5.0),
    "speech_phrases_heldout_other_voices.wer": ("<=", 5.0),
    "qa_spoken_other_voices.accuracy": (">=", 85.0),
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
               "speech_10db": "mixed test utterances, 10 dB SNR",
               # not in evaluations before v4.35
               "speech_captions_other_voices": "spoken test captions, other synthesizers' voices",
               "speech_phrases_other_voices": "speech set's phrases, other synthesizers' voices",
               "speech_phrases_heldout_other_voices": "held-out phrases, other synthesizers' voices"}
# The same typed question about each of two objects of a test scene (`paired_questions`); older evaluations lack it.
PAIRED_FIGURES = {"both_right": "both answers right, %", "answers_differ": "the two answers differ, %"}
QA_SETS = {"qa_typed": "typed, question set's wording", "qa_heldout_typed": "typed, held-out wording",
           "qa_heldout_typed_lowercase": "typed, held-out wording in lowercase",
           "qa_spoken": "spoken, question set's wording", "qa_heldout_spoken": "spoken, held-out wording",
           "qa_spoken_other_voices": "spoken, question set's wording, other synthesizers' voices",
           # Held-out wording about an object the picture does not hold: right when the answer says it is not there
           # and names it as asked ("there is no red star")
           "qa_absent": "typed, held-out wording, about an object not in the picture",
           "qa_absent_spoken": "spoken, held-out wording, about an object not in the picture"}  # not before v4.44


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
    for key, name in QA_SETS.items():  # answers saying "there is no ...", whatever they name
        if "said_absent" in (results.get(key) or {}):
            rows.append(Figure(f"{key}.said_absent", f"Questions, {name}: answers saying an object is not there, %",
                               results[key]["said_absent"]))
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
        reason = "not in this evaluation, which predates it" if result is None else result["reason"]
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

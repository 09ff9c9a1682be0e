"""Turn a training checkpoint into the shipped `assets/mmgpt-tiny/`: Hub-format files plus a model card.

    python -m mmgpt ship --checkpoint runs/mmgpt-tiny/checkpoint --out assets/mmgpt-tiny
    python -m mmgpt evaluate --model assets/mmgpt-tiny --out eval.json
    python -m mmgpt ship --checkpoint runs/mmgpt-tiny/checkpoint --out assets/mmgpt-tiny --eval eval.json

The weights ship in fp16, half the bytes of training's fp32, so the first command writes them and no card, and the
evaluation measures the files that ship, not the checkpoint they came from. The second `ship` writes the same bytes
again and refuses an evaluation of any others (`weights_sha256`). The model card's figures are read from that JSON
and the checkpoint's own training state, so the card says what was measured, never what was hoped. Each figure
stands beside its target (issue 14), the in-distribution figure beside the out-of-distribution one. For every missed
target the card says by how much and leaves a "Why" for a person to fill: `--why why.json` maps a target's key (as
in `evaluate.TARGETS`, e.g. "caption_heldout.keyword_accuracy") to that explanation, so re-shipping never loses it.
"""

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import torch

from .evaluate import PAIRED_FIGURES, REFERENCE_TEXT_NATS, TARGETS, Figure, figures, format_target

WEIGHTS = "model.safetensors"
SHIPPED_FILES = ("config.json", "generation_config.json", WEIGHTS, "tokenizer.json", "tokenizer_config.json",
                 "processor_config.json")
CARD_FILES = ("README.md", "eval.json")  # they describe the weights beside them, so they go when those change
MAX_NEW_TOKENS = 64  # the shipped default; captions and transcripts need far fewer
NOT_EXPLAINED = "_not explained yet: pass `--why why.json` to `python -m mmgpt ship`_"


def ship(checkpoint: str | Path, eval_json: str | Path | None, out: str | Path, command: str,
         why: dict[str, str] | None = None) -> Path:
    """Write the checkpoint's files to `out`, its weights in fp16, and, given the evaluation of exactly those
    weights, its model card; `why`: {target key: why it was missed}."""
    from transformers import GenerationConfig

    from .model import SPECIAL_TOKENS, MMGPTConfig

    checkpoint, out = Path(checkpoint), Path(out)
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False, map_location="cpu")
    if any(config.get("named_answers") for config in [state["config"]] + [r["config"] for r in
                                                                           state.get("resumes", [])]):
        raise ValueError(f"{checkpoint} was trained to name the object before its answer ('circle red', "
                         "--named-answers): an ablation's checkpoint, not one to ship")
    trained = _safetensors(checkpoint / WEIGHTS)
    weights = fp16_weights(trained)
    results = json.loads(Path(eval_json).read_text()) if eval_json is not None else None
    if results is not None and results.get("weights_sha256") != _sha256(weights):
        raise ValueError(f"{eval_json} measured other weights than {checkpoint} ships: run `python -m mmgpt ship` "
                         f"without --eval, evaluate {out}, and pass that evaluation")
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        if name not in (WEIGHTS, "config.json") and (checkpoint / name).exists():
            shutil.copy2(checkpoint / name, out / name)
    _replace(out / WEIGHTS, weights)
    config = MMGPTConfig.from_pretrained(checkpoint)
    config.dtype = "float32"  # what `from_pretrained` widens the fp16 weights to
    config.save_pretrained(out)
    # Markers and placeholders are inputs only; the end-of-text token (id 0) must stay sampleable.
    generation = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_new_tokens=MAX_NEW_TOKENS, suppress_tokens=list(range(1, len(SPECIAL_TOKENS))),
    )
    generation.save_pretrained(out)
    if results is None:
        for name in CARD_FILES:
            (out / name).unlink(missing_ok=True)
        return out
    n_params = sum(t.numel() for t in trained.values())
    (out / "README.md").write_text(model_card(config, state, results, n_params, command, why or {}))
    if Path(eval_json).resolve() != (out / "eval.json").resolve():  # the card's figures travel with the weights
        shutil.copyfile(eval_json, out / "eval.json")
    return out


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to `path` as a new file that takes the old one's name. safetensors maps a model's weights from
    their file, so a process serving or training from the old weights keeps reading the old file until it closes
    it. Written over in place, they vanished under a training run, which died of a bus error."""
    written = path.with_name(path.name + ".partial")
    written.write_bytes(data)
    os.replace(written, path)


def fp16_weights(weights: dict[str, torch.Tensor]) -> bytes:
    """A safetensors file of `weights`, every floating-point one rounded to fp16. `config.json` keeps its
    float32, so `from_pretrained` widens them again as it loads. Rounding v4.29 this way moved one figure of its
    whole evaluation, held-out phrases' WER, from 71.0 to 71.4%; it halves what ships, which is room under the 40 MB
    for a model twice the size."""
    from safetensors.torch import save

    return save({name: w.half() if w.is_floating_point() else w for name, w in weights.items()},
                metadata={"format": "pt"})


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def weights_sha256(model_dir: str | Path) -> str | None:
    """What names the weights an evaluation measured, so that `ship` can check them against what it ships; None for
    a model that is no directory holding one weights file (a Hub id, sharded weights), which `ship` never writes."""
    path = Path(model_dir) / WEIGHTS
    return _sha256(path.read_bytes()) if path.is_file() else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unexplained_misses(results: dict, why: dict[str, str]) -> list[str]:
    """The keys of missed targets that `why` does not explain."""
    return [f.key for f in figures(results) if f.key in TARGETS and f.met is False and not why.get(f.key)]


def _cell(figure: Figure | None) -> str:
    return "" if figure is None else figure.shown


def _target_and_met(inside: Figure | None, outside: Figure | None) -> tuple[str, str]:
    """The target and met cells of a row holding an in-distribution and an out-of-distribution figure."""
    sides = [(side, f) for side, f in (("in", inside), ("out", outside)) if f is not None and f.target]
    mark = {True: "yes", False: "**no**", None: "–"}
    if not sides:
        return "", ""
    if len(sides) == 1 and (outside is None or inside is None):
        return format_target(sides[0][1].target), mark[sides[0][1].met]
    if len(sides) == 2 and inside.target == outside.target:
        return f"{format_target(inside.target)} each", ", ".join(f"{side} {mark[f.met]}" for side, f in sides)
    return (", ".join(f"{format_target(f.target)} ({side})" for side, f in sides),
            ", ".join(f"{side} {mark[f.met]}" for side, f in sides))


# (label, in-distribution key, out-of-distribution key): the card's first table, one row per pair of figures.
HEADLINE_ROWS = (
    ("Captions: exact match, %", "caption_test.exact_match", "caption_heldout.exact_match"),
    ("Captions: keyword accuracy (colour and shape words), %", "caption_test.keyword_accuracy",
     "caption_heldout.keyword_accuracy"),
    ("Captions: colour accuracy, %", "caption_test.colour_accuracy", "caption_heldout.colour_accuracy"),
    ("Captions: shape accuracy, %", "caption_test.shape_accuracy", "caption_heldout.shape_accuracy"),
    ("Captions: size accuracy, %", "caption_test.size_accuracy", "caption_heldout.size_accuracy"),
    ("Captions: BLEU", "caption_test.bleu", "caption_heldout.bleu"),
    ("Captions, compositional split (unseen colour+shape pairs): exact match, %",
     "caption_compositional.exact_match", None),
    ("Captions, compositional split: keyword accuracy, %", "caption_compositional.keyword_accuracy", None),
    ("Captions, one shape drawn big: exact match, %", None, "caption_heldout_big.exact_match"),
    ("Captions, one shape drawn big: keyword accuracy, %", None, "caption_heldout_big.keyword_accuracy"),
    ("Speech WER, held-out voices: spoken test captions, %", "speech_captions.wer", None),
    ("Speech WER, held-out voices: free-form phrases, %", "speech_phrases.wer", "speech_phrases_heldout.wer"),
    ("Speech WER, held-out voices: captions, numbers and commands, clean, %", "speech_clean.wer", None),
    ("Speech WER, held-out voices: captions, numbers and commands, 10 dB SNR, %", "speech_10db.wer", None),
    ("Speech WER, other synthesizers' held-out voices: spoken test captions, %", "speech_captions_other_voices.wer",
     None),
    ("Speech WER, other synthesizers' held-out voices: free-form phrases, %", "speech_phrases_other_voices.wer",
     "speech_phrases_heldout_other_voices.wer"),
    ("Questions, typed: accuracy, %", "qa_typed.accuracy", "qa_heldout_typed.accuracy"),
    ("Questions, typed in lowercase: accuracy, %", None, "qa_heldout_typed_lowercase.accuracy"),
    ("Questions, spoken in held-out voices: accuracy, %", "qa_spoken.accuracy", "qa_heldout_spoken.accuracy"),
    ("Questions, spoken in other synthesizers' held-out voices: accuracy, %", "qa_spoken_other_voices.accuracy",
     None),
    ("Questions about an object not in the picture: says an object is not there, %", None, "qa_absent.said_absent"),
    ("Questions about an object not in the picture: says the one asked about is not there, %", None,
     "qa_absent.accuracy"),
    ("Questions about an object not in the picture, spoken in held-out voices: says the one asked about is not "
     "there, %", None, "qa_absent_spoken.accuracy"),
    ("Questions about objects in the picture: says one is not there, %", "qa_typed.said_absent",
     "qa_heldout_typed.said_absent"),
    ("Text: Tiny Shakespeare validation, nats/char", "text_nats_per_char", None),
    ("Checkpoint, MiB", "checkpoint_mb", None),
    ("Decode speed, tokens/s (batch 1, this 2-core CPU)", "decode_tokens_per_s", None),
)


def _headline_table(by_key: dict[str, Figure]) -> str:
    lines = ["| figure | in-distribution | out-of-distribution | target | met |", "|---|---|---|---|---|"]
    for label, inside, outside in HEADLINE_ROWS:
        a, b = by_key.get(inside) if inside else None, by_key.get(outside) if outside else None
        target, met = _target_and_met(a, b)
        lines.append(f"| {label} | {_cell(a)} | {_cell(b)} | {target} | {met} |")
    return "\n".join(lines)


def _breakdown_table(by_key: dict[str, Figure], first: str, columns: dict[str, str], rows: dict[str, str],
                     template: str, field: str) -> str:
    """One row per `rows` item (label: name), one column per `columns` key (a result key, or a field of one result:
    its target, from `TARGETS[f"{key}.{field}"]`, goes in its header); a cell is the figure whose key is
    template.format(key=column key, name=row name)."""
    headers = []
    for key, header in columns.items():
        target = TARGETS.get(f"{key}.{field}")
        headers.append(f"{header} ({format_target(target)})" if target else header)
    lines = [f"| {first} | " + " | ".join(headers) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, name in rows.items():
        cells = [by_key.get(template.format(key=key, name=name)) for key in columns]
        lines.append(f"| {label} | " + " | ".join(_cell(c) or "–" for c in cells) + " |")
    return "\n".join(lines)


def _names(results: dict, keys, group: str) -> dict[str, str]:
    names = sorted({name for key in keys for name in (results.get(key) or {}).get(f"by_{group}", {})})
    return {name: name for name in names}


def _evaluation_section(results: dict, why: dict[str, str]) -> str:
    from .data import heldout, scenes

    edged_styles = " and ".join(f'"{style}"' for style in heldout.EDGED_STYLES)
    rows = figures(results)
    by_key = {f.key: f for f in rows}
    voice_columns = {"speech_captions": "test captions", "speech_phrases": "speech set's phrases",
                     "speech_phrases_heldout": "held-out phrases", "speech_clean": "mixed, clean",
                     "speech_10db": "mixed, 10 dB"}
    other_voice_columns = {"speech_captions_other_voices": "test captions",
                           "speech_phrases_other_voices": "speech set's phrases",
                           "speech_phrases_heldout_other_voices": "held-out phrases"}
    qa_columns = {"qa_typed": "typed", "qa_heldout_typed": "typed, held-out wording",
                  "qa_heldout_typed_lowercase": "the same in lowercase", "qa_spoken": "spoken",
                  "qa_heldout_spoken": "spoken, held-out wording",
                  "qa_spoken_other_voices": "spoken, other synthesizers",
                  "qa_absent": "about an absent object, held-out wording",
                  "qa_absent_spoken": "the same, spoken"}
    sizes = results.get("sizes", {})
    parts = [
        f"`python -m mmgpt evaluate --model assets/mmgpt-tiny` (seed {results.get('seed', '?')}, "
        f"{results.get('eval_seconds', math.nan) / 60:.1f} min on this 2-core CPU). Nothing is measured on training "
        "data. In-distribution: fresh scenes of the training renderer, and the question set's wording. "
        "Out-of-distribution: `mmgpt/data/heldout.py`, a second renderer written separately and used only here "
        "(its own shape geometry, hues, strokes, outlines, backgrounds from white paper to dark and textured, "
        "picture sizes from 100x80 to 512x512, wobble, blur and JPEG), its own question wording and its own "
        f"spoken phrases. {sizes.get('scenes', '?')} scenes per caption split, {sizes.get('per_voice', '?')} "
        f"texts per held-out voice per speech set, {sizes.get('questions', '?')} questions per kind per wording. "
        "Keyword accuracy: the % of the reference objects' colour and shape words that the generated caption has "
        "at the same place (`mmgpt/evaluate/captions.py` defines it exactly).",
        _headline_table(by_key),
        "### Word error rate per held-out voice, %",
        _breakdown_table(by_key, "voice", voice_columns, _names(results, voice_columns, "voice"),
                         "{key}.by_voice.{name}.wer", "wer"),
        *(["### Word error rate per held-out voice of another synthesizer, %",
           "flite's, festival's and piper's voices, built from recordings of speakers that no training voice is built "
           "from (`mmgpt.data.speech.OTHER_TEST_VOICES`); piper's is a neural network's.",
           _breakdown_table(by_key, "voice", other_voice_columns, other_voices, "{key}.by_voice.{name}.wer", "wer")]
          if (other_voices := _names(results, other_voice_columns, "voice")) else []),
        "### Questions by kind, accuracy %",
        _breakdown_table(by_key, "kind", qa_columns, _names(results, qa_columns, "kind"),
                         "{key}.by_kind.{name}.accuracy", "accuracy"),
        "### Questions by how many objects the picture holds, accuracy %",
        "About one object, a question is answered without finding the object it names; among two or three, only "
        "by finding it.",
        _breakdown_table(by_key, "objects", qa_columns, _names(results, qa_columns, "objects"),
                         "{key}.by_objects.{name}.accuracy", "accuracy"),
        *_paired_part(results, by_key),
        "### Out-of-distribution captions by how they were drawn, keyword accuracy %",
        *([f"The training renderer edges {scenes.EDGED_PROBABILITY:.0%} of its filled shapes in a darker ink, so the "
           f"held-out styles {edged_styles} are a kind of "
           "picture that training holds, drawn by other code: they measure coverage more than generalization."]
          if scenes.EDGED_PROBABILITY else []),
        _breakdown_table(by_key, "drawn with", {"caption_heldout": "held-out renderer"},
                         {f"{group}: {name}": f"{group}.{name}" for group in ("background", "finish", "style")
                          for name in results["caption_heldout"].get(f"by_{group}", {})},
                         "{key}.by_{name}.keyword_accuracy", "keyword_accuracy"),
        "### Targets missed",
        _misses(rows, why),
    ]
    return "\n\n".join(parts)


def _paired_part(results: dict, by_key: dict[str, Figure]) -> list[str]:
    """The card's section on the same question about each of two objects, when the evaluation has it."""
    paired = results.get("qa_paired") or {}
    if not paired.get("available"):
        return []
    columns = {field: label.removesuffix(", %") for field, label in PAIRED_FIGURES.items()}
    return [
        "### The same question about each of two objects, %",
        f"{paired['n']} pairs on test scenes, each one typed question in one wording asked about two objects whose "
        "answers differ (\"what colour is the circle?\", \"what colour is the square?\"). A model that reads the "
        "picture but not which object the question names gives both the same answer. Both answers right: "
        f"{paired['both_right']:.1f}%; the two answers differ: {paired['answers_differ']:.1f}%.",
        _breakdown_table(by_key, "kind", columns, _names(results, ("qa_paired",), "kind"),
                         "qa_paired.by_kind.{name}.{key}", ""),
    ]


def _part_name(key: str) -> str:
    """"speech_captions.by_voice.en-029+m7.wer" -> "voice en-029+m7"."""
    group_and_name = key.split(".by_", 1)[1].rsplit(".", 1)[0]
    group, name = group_and_name.split(".", 1)
    return f"{group} {name}"


def _misses(rows: list[Figure], why: dict[str, str]) -> str:
    """Each missed target: by how much, the parts that missed it too, and why (from `why`)."""
    entries = []
    for figure in rows:
        if figure.key not in TARGETS or figure.met is not False:
            continue
        whole = figure.key.rsplit(".", 1)[0] if "." in figure.key else figure.key
        parts = [f for f in rows if f.key.startswith(whole + ".by_") and f.met is False
                 and f.key.endswith("." + figure.key.rsplit(".", 1)[-1])]
        also = "; ".join(f"{_part_name(f.key)} {f.shown}" for f in parts)
        entries.append(
            f"- **{figure.label}**: {figure.shown} against {format_target(figure.target)}, "
            f"missed by {figure.shortfall:.{figure.decimals}f}." + (f" Also missed: {also}." if also else "")
            + f"\n  **Why:** {why.get(figure.key) or NOT_EXPLAINED}")
    unmeasured = [f for f in rows if f.key in TARGETS and f.value is None]
    entries += [f"- **{f.label}**: not measured ({f.note}); target {format_target(f.target)}." for f in unmeasured]
    return "\n".join(entries) if entries else "Every target is met."


def _image_stem(config) -> str:
    if not config.image_stem_layers:
        return ""
    blocks = config.image_stem_blocks
    residual = f", each followed by {blocks} residual block{'s' * (blocks > 1)} of two 3x3 convolutions" \
        if blocks else ""
    return f"a convolutional stem ({config.image_stem_layers} stride-2 3x3 convolutions, GELU{residual}), then "


def _mel_warp(train_cfg: dict) -> str:
    warp = train_cfg.get("mel_warp", 0.0)
    if not warp:
        return ""
    return f", each heard with its frequencies warped by a random factor within +/-{warp:.0%}"


def _batch_recipe(train_cfg: dict) -> str:
    notes = []
    if noise := train_cfg.get("colour_word_noise", 0.0):
        notes.append(f"In caption inputs each colour word is swapped for another colour with probability {noise} "
                     "(the labels keep the true colour), so the shape that follows must be read from the picture, "
                     "not guessed from the colour.")
    windows = train_cfg.get("speech_window_batches", 0)
    notes.append(f"Utterance batches are drawn from windows of {windows} batches' worth of clips of similar length."
                 if windows else "Utterance batches are drawn from the whole pool, whatever their lengths.")
    return "\n" + " ".join(notes)


SPOKEN_KINDS = {"caption": "scene captions", "phrase": "free-form phrases", "question": "questions",
                "number": "numbers 0-999", "command": "short commands"}


def _data_section(train_cfg: dict) -> str:
    """What the model was trained on, read from the data modules' own settings and the run's configuration."""
    from .data import scenes, speech
    from .data.questions import ABOUT_THE_ONLY_ONE, QUESTION_KINDS, TEMPLATES
    from .train.config import listed_names

    clutter = train_cfg.get("clutter_share", 0.0)
    lines = [
        f"- **Scenes:** 1 to 3 of {len(scenes.SHAPES)} shapes in {len(scenes.COLOURS)} colours and "
        f"{len(scenes.SIZES)} sizes, with one canonical caption each (\"a large red circle at the top left\", "
        "\"a small blue square above a large green star\", three objects listed left to right). Backgrounds: "
        f"{', '.join(scenes.BACKGROUND_KINDS)}; filled or outlined ({scenes.OUTLINE_PROBABILITY:.0%}), "
        f"{scenes.EDGED_PROBABILITY:.0%} of filled shapes edged in near-black or a darker shade of the fill, rotated, "
        f"sometimes wobbled or aliased, {scenes.JPEG_PROBABILITY:.0%} saved as JPEG; pictures "
        f"{scenes.SHORT_SIDE_PIXELS[0]}-{scenes.SHORT_SIDE_PIXELS[1]} px on the short side, aspect up to "
        f"{scenes.MAX_ASPECT:g}:1, resized square for the model. {len(scenes.HELD_OUT_PAIRS)} colour+shape pairs "
        "never appear in training (compositional split)."
        + (f" {clutter:.0%} of pictures are no scene at all, captioned \"{scenes.UNRECOGNISED_CAPTION}\"."
           if clutter else "")
        + (f" {focus:.0%} of the captioned scenes are drawn again until they hold a "
           f"{' or a '.join(listed_names('focus_shapes', train_cfg['focus_shapes'], scenes.SHAPES))}, shapes the "
           "model read as each other."
           if (focus := train_cfg.get("focus_share")) else ""),
    ]
    if train_cfg.get("ask_batch"):
        lines.append(
            f"- **Questions:** conversations of 1 to {train_cfg.get('max_turns', 1)} questions about a scene "
            f"({', '.join(QUESTION_KINDS)}), with follow-ups that need the earlier turns; the last question typed "
            "or spoken (`mmgpt/data/questions.py`). Each kind is asked in "
            f"{min(map(len, TEMPLATES.values()))} to {max(map(len, TEMPLATES.values()))} phrasings, objects are "
            "named in everyday synonyms (\"the big circle\", \"how many objects\"), and the only object in a picture "
            f"also as \"it\", \"this\" or \"that\" ({sum(map(len, ABOUT_THE_ONLY_ONE.values()))} more phrasings)."
            + (" Every answer first says what the model sees, then answers from it: \"a small red circle left of "
               "a large blue square, so red\"; answers are judged on what follows \"so\"."
               if train_cfg.get("describe_first") else "")
            + (" A relation answer first says, step by step, what decides it: \"the star above the circle, so the "
               "star is above the circle, so you asked below, so no\"."
               if train_cfg.get("relation_reasoning") else "")
            + (f" {paired:.0%} of the typed questions come in pairs: the same question about two objects of one "
               "picture, with different answers, so an answer that ignores the object named is wrong for one."
               if (paired := train_cfg.get("paired_share")) else "")
            + (f" In {absent:.0%} of the typed conversations about a scene (not the pairs), the last question names "
               "an object the picture does not hold, a present object's name with one word changed (\"what colour "
               "is the star?\" beside a circle), answered \"there is no star\"."
               + (f" {relation:.0%} of them are relation questions (\"is the star left of the circle?\")."
                  if (relation := train_cfg.get("absent_relation_share")) else "")
               if (absent := train_cfg.get("absent_object_share")) else "")
            + (f" In {spoken_absent:.0%} of the spoken conversations, the last question, spoken, names an object "
               "the picture does not hold."
               if (spoken_absent := train_cfg.get("spoken_absent_object_share")) else "")
            + (" After a spoken question the model first writes the words it heard, then answers them as it answers "
               "a typed question, the recording still before them."
               if train_cfg.get("transcribe_spoken_questions") else "")
            + (f" {swapped:.0%} of the spoken questions are heard as another question's recording, their words "
               "given rather than learned, so that answers come from the written words rather than the sound."
               if (swapped := train_cfg.get("swapped_recording_share")) else ""))
    said = [SPOKEN_KINDS.get(kind, kind) for kind in getattr(speech, "CONTENT_WEIGHTS", {"caption": 1})]
    kinds = ", ".join(said[:-1]) + f" and {said[-1]}" if len(said) > 1 else said[0]
    reverb = getattr(speech, "REVERB_PROBABILITY", 0.0)
    lines.append(
        f"- **Speech:** espeak-ng speaking {kinds} in {len(speech.TRAIN_VOICES)} training voices, "
        f"{speech.SPEED_WPM[0]}-{speech.SPEED_WPM[1]} wpm, pitch {speech.PITCH[0]}-{speech.PITCH[1]}, "
        f"{' or '.join(speech.NOISE_COLOURS)} noise at {speech.SNR_DB[0]:g}-{speech.SNR_DB[1]:g} dB SNR"
        + (f" ({clean:.0%} with no noise)" if (clean := train_cfg.get("clean_speech_share")) else "")
        + (f", {reverb:.0%} in a simulated room" if reverb else "")
        + (f"; {other:.0%} of it said instead by other synthesizers' voices, built from recordings of real speakers "
           f"({', '.join(speech.OTHER_TRAIN_VOICES)})" if (other := train_cfg.get("other_voice_share")) else "")
        + f"; {len(speech.TEST_VOICES)} other voices are held out for testing, and "
        f"{len(speech.OTHER_TEST_VOICES)} of other synthesizers ({', '.join(speech.OTHER_TEST_VOICES)}). "
        f"{train_cfg['speech_pool']} training utterances"
        + (f" and {train_cfg['spoken_question_pool']} spoken questions" if train_cfg.get("spoken_ask_batch") else "")
        + f"{_mel_warp(train_cfg)}."
        + (f" {text_share:.0%} of the training utterances are runs of 2 to 8 words of the training text (below), "
           "for words beyond the speech set's own." if (text_share := train_cfg.get("speech_text_share")) else "")
        + (f" {word_share:.0%} of the training utterances are runs of 2 to 8 words drawn one by one, half from the "
           f"speech set's words and half from the others among the training text's {_most_frequent(train_cfg)}, so "
           "that no sentence frame tells the next word." if (word_share := train_cfg.get("speech_word_share")) else ""))
    lines.append("- **Text:** Tiny Shakespeare, first 90% of characters (nanoGPT's split); the corpus is not "
                 "redistributed here.")
    return "\n".join(lines)


def _most_frequent(train_cfg: dict) -> str:
    # checkpoints trained before `speech_word_vocabulary` existed do not record it
    vocabulary = train_cfg.get("speech_word_vocabulary")
    return f"{vocabulary} most frequent words" if vocabulary else "most frequent words"


def _training_section(train_cfg: dict) -> str:
    by_task = {"text": f"{train_cfg['text_batch']} text windows of {train_cfg['text_block']} tokens",
               "caption": f"{train_cfg['image_batch']} captioned pictures",
               "transcribe": f"{train_cfg['audio_batch']} utterances"}
    if train_cfg.get("ask_batch"):
        by_task["ask"] = f"{train_cfg['ask_batch']} typed conversations about a picture"
    if train_cfg.get("spoken_ask_batch"):
        by_task["spoken_ask"] = f"{train_cfg['spoken_ask_batch']} conversations ending in a spoken question"
    # Runs from before `tasks` trained every task.
    trained = [task.strip() for task in train_cfg.get("tasks", ",".join(by_task)).split(",")]
    parts = [part for task, part in by_task.items() if task in trained]
    if len(parts) == 1:
        loss = f"Every step trains one sub-batch: {parts[0]}."
    else:
        weighted = train_cfg.get("task_weights")
        loss = (f"Every step's loss is the {'weighted ' * bool(weighted)}mean of the losses of {len(parts)} "
                f"sub-batches: {', '.join(parts[:-1])} and {parts[-1]}"
                + (f" (weights `{weighted}`, every other task 1)." if weighted else "."))
    notes = f" Weights start from `{train_cfg['init_from']}`." if train_cfg.get("init_from") else ""
    if train_cfg.get("questions_train_image") is False:
        notes += " The questions' losses do not reach the image encoder; the captions alone train it."
    return (
        f"{loss}{notes} "
        f"AdamW (lr {train_cfg['lr']}, betas 0.9/0.95, weight decay {train_cfg['weight_decay']} on matrices), "
        f"{train_cfg['warmup_steps']} warmup steps then cosine decay to {train_cfg['min_lr']}, gradient clipping at "
        f"{train_cfg['grad_clip']}, dropout {train_cfg['dropout']}, {train_cfg.get('precision', 'fp32')} autocast, "
        f"seed {train_cfg['seed']}.{_batch_recipe(train_cfg)}"
    )


def _resumes_section(state: dict) -> str:
    """What each resume changed in the run's settings: the sections above read the first configuration."""
    sentences, before = [], state["config"]
    for resume in state.get("resumes", []):
        changed = [f"`{key}` {before.get(key)!r} -> {value!r}" for key, value in resume["config"].items()
                   if key != "out_dir" and before.get(key) != value]
        if changed:
            sentences.append(f"Resumed at step {resume['step']} with {', '.join(changed)}.")
        before = resume["config"]
    return (" " + " ".join(sentences)) if sentences else ""


def _averaged_section(state: dict) -> str:
    """The checkpoints whose mean the weights are (`python -m mmgpt average`); the settings above are the last's."""
    if not state.get("averaged"):
        return ""
    names = ", ".join(f"`{source}`" for source in state["averaged"])
    return (f" The weights are the mean of {len(state['averaged'])} checkpoints of this lineage, {names} "
            "(`python -m mmgpt average`); the settings above, and the steps and time below, are the last one's.")


def _questions_limit(results: dict) -> str:
    if (results.get("qa_typed") or {}).get("available"):
        return ", and answers questions only about scene pictures"
    return " or answer questions"


def model_card(config, state: dict, results: dict, n_params: int, command: str,
               why: dict[str, str] | None = None) -> str:
    train_cfg = state["config"]
    minutes = state["train_seconds"] / 60
    references = "\n".join(f"| {name} | {value} |" for name, value in REFERENCE_TEXT_NATS.items())
    return f"""---
license: mit
language:
- en
library_name: transformers
pipeline_tag: image-text-to-text
tags:
- multimodal
- from-scratch
- tiny
- mmgpt
---

# mmgpt-tiny

A {n_params / 1e6:.1f}M-parameter multimodal GPT trained from scratch on a 2-core CPU. One decoder reads a
{config.image_size}x{config.image_size} picture, up to {config.max_audio_frames // 100} s of 16 kHz speech, or text,
and writes text. It is the offline default of the mmgpt demo and loads with the Auto classes after `import mmgpt`
(no remote code). Its weights are stored in fp16 and load as fp32, as `config.json` asks; the evaluation below is of
these files.

```python
import mmgpt  # registers the architecture with transformers
from transformers import AutoModelForCausalLM, AutoProcessor
model = AutoModelForCausalLM.from_pretrained("assets/mmgpt-tiny")
processor = AutoProcessor.from_pretrained("assets/mmgpt-tiny")
inputs = processor(images=image)            # or audio=waveform, sampling_rate=sr / text="ROMEO:"
print(processor.decode(model.generate(**inputs)[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

## Architecture
- **Decoder:** {config.n_layer} pre-LN causal blocks, width {config.n_embd}, {config.n_head} heads,
  `scaled_dot_product_attention`, GELU MLP, learned positions (context {config.n_positions}), tied embeddings.
- **Image encoder:** {_image_stem(config)}{config.patch_size}x{config.patch_size} patches of a
  {config.image_size}x{config.image_size} image ({config.num_patches} prefix tokens), learned 2-D (row + column)
  positions, {config.image_layers} bidirectional blocks.
- **Audio encoder:** 80-bin log-mel at 16 kHz (10 ms hop), two stride-2 Conv1d layers (one token per 40 ms),
  sinusoidal positions `PE(pos,2i)=sin(pos/10000^(2i/d))`, `PE(pos,2i+1)=cos(...)`, {config.audio_layers}
  bidirectional blocks.
- **Fusion:** `[modality marker][prefix tokens][task token][text]`, then causal generation.
- **Tokenizer:** byte-level BPE, {config.vocab_size} tokens, trained on the data below; any Unicode round-trips.

## Data
All made by the project (`mmgpt/data/`), deterministic given a seed:
{_data_section(train_cfg)}

## Training
{_training_section(train_cfg)}{_resumes_section(state)}{_averaged_section(state)}

- Command: `{command}`
- Steps: {state['step']}; training wall time: {minutes:.1f} min on a 2-core CPU (evaluation pauses excluded),
  shared at times with other work on the same machine.

## Evaluation
{_evaluation_section(results, why or {})}

Reference Tiny Shakespeare validation losses (nats/char, character-level models):

| model | nats/char |
|---|---|
{references}

mmgpt-tiny's tokens are BPE pieces, so its loss is summed over tokens and divided by the characters they cover,
which makes the figures comparable.

## Limits
- It knows synthetic shapes and synthetic voices, not photos or human speech: on a real photo it will still
  describe coloured shapes, and on a human voice it will answer with a caption, a number or a command.
- Its text is Shakespeare-flavoured pastiche from a 1 MB corpus; it cannot follow
  instructions{_questions_limit(results)}.
- Audio longer than {config.max_audio_frames // 100} s must be cut into windows (the demo's engine does this).
"""

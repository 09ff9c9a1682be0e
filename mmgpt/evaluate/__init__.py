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
  and the same three sets in the held-out voices of other synthesizers (`OTHER_TEST_VOICES`: flite, festival and
  piper voices of speakers that no training voice is built from);
- **questions:** accuracy per question kind, typed and spoken in held-out voices, for the question set's wording on
  test scenes (in-distribution) and for the held-out wording on held-out scenes (out-of-distribution), the first also
  spoken by the other synthesizers' held-out voices; and the same typed question about each of two objects of a test
  scene, which shows whether answers follow the object named;
  from a checkpoint that writes a spoken question down before it answers, the WER of those words as well;
- **the checkpoint's size.**

By concern: `common` (token limits, sizes, greedy decoding and the helpers every scorer uses), `captions` (caption
figures; its docstring defines keyword accuracy), `speech` (word error rate, and texts spoken in held-out voices),
`questions` (answers to typed, spoken and paired questions), `report` (the targets, `Figure` and the table) and
`run` (the whole evaluation, with text nats/char, decode speed and the checkpoint's size).
"""


from .captions import (_keyword_figures, caption_scores, keyword_hits, object_phrases, said_of_each_object,
                       shape_confusions)
from .common import ANSWER_TOKENS, MISTAKES_KEPT, TRANSCRIPT_TOKENS, EvalSizes, greedy_texts
from .questions import (Asked, answer_scores, greedy_answers, heard_questions, heldout_wording_questions,
                        in_distribution_questions, pair_figures, paired_questions, paired_scores, question_scores,
                        spoken_versions)
from .report import (CAPTION_FIGURES, CAPTION_SETS, PAIRED_FIGURES, QA_SETS, REFERENCE_TEXT_NATS, SPEECH_SETS, TARGETS,
                     Figure, figures, format_table, format_target)
from .run import checkpoint_megabytes, decode_tokens_per_second, evaluate, text_nats_per_char
from .speech import (Spoken, normalize_transcript, per_voice_scores, speak, speech_set_phrases,
                     transcription_scores)

__all__ = [
    "ANSWER_TOKENS", "Asked", "CAPTION_FIGURES", "CAPTION_SETS", "EvalSizes", "Figure", "MISTAKES_KEPT",
    "PAIRED_FIGURES", "QA_SETS", "REFERENCE_TEXT_NATS", "SPEECH_SETS", "Spoken", "TARGETS", "TRANSCRIPT_TOKENS",
    "_keyword_figures", "answer_scores", "caption_scores", "checkpoint_megabytes", "decode_tokens_per_second",
    "evaluate", "figures", "format_table", "format_target", "greedy_answers", "greedy_texts", "heard_questions",
    "heldout_wording_questions", "in_distribution_questions", "keyword_hits", "normalize_transcript", "object_phrases",
    "pair_figures", "paired_questions", "paired_scores", "per_voice_scores", "question_scores", "said_of_each_object",
    "shape_confusions", "speak", "speech_set_phrases", "spoken_versions", "text_nats_per_char", "transcription_scores",
]

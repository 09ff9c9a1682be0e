"""How a training run is set: `TrainConfig`, one field per `python -m mmgpt train` option, and the readers that
turn its comma-separated settings into names, each naming a misspelt entry."""

import dataclasses
import math
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp32")
TASKS = ("text", "caption", "transcribe", "ask", "spoken_ask")  # one sub-batch each per step (TaskBatches methods)
QUESTION_TASKS = ("ask", "spoken_ask")
# What the model is: fixed by the checkpoint a run resumes from, whatever a resume's command line says
MODEL_FIELDS = ("vocab_size", "n_embd", "n_layer", "n_head", "dropout", "image_layers", "image_stem_layers",
                "image_stem_blocks", "image_position_std", "audio_layers", "n_positions", "image_size", "patch_size",
                "max_audio_frames")
# Counts a step cannot do without: none of these can be 0
AT_LEAST_ONE = ("steps", "eval_every", "text_batch", "text_block", "image_batch", "audio_batch", "ask_batch",
                "spoken_ask_batch", "max_turns", "eval_text_windows", "eval_text_block")
SHARES = ("paired_share", "clean_speech_share", "other_voice_share", "speech_text_share", "speech_word_share",
          "swapped_recording_share", "focus_share", "absent_object_share", "absent_relation_share",
          "spoken_absent_object_share")


class ConfigError(ValueError):
    """A training setting that cannot work, named; the command line reports it as a usage error."""


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/mmgpt-tiny"
    text_path: str | None = None  # Tiny Shakespeare; None means $MMGPT_DATA_DIR or ../shared/data
    speech_cache_dir: str | None = None  # espeak-ng clips; None means $MMGPT_CACHE_DIR or ~/.cache/mmgpt
    seed: int = 0
    steps: int = 3000  # length of the cosine schedule
    max_minutes: float = 0.0  # stop (and checkpoint) after this much training time in total; 0 = no limit
    # model
    vocab_size: int = 2048
    n_embd: int = 256
    n_layer: int = 6  # decoder blocks; a warm start from a checkpoint with fewer grows them as the encoders'
    n_head: int = 8
    dropout: float = 0.1
    image_layers: int = 2  # a warm start from a checkpoint with fewer grows them (`silence_new_blocks`)
    # Stride-2 convolutions before the patch embedding; 0 is a plain ViT. A warm start from a checkpoint with fewer
    # adds them in front (`add_stem_layer`), each doubling the pixels per side and the patch size.
    image_stem_layers: int = 2
    # Residual 3x3 convolution pairs after each stem layer. A warm start from a checkpoint with fewer grows them,
    # starting as the identity, so the model's answers are unchanged until the new blocks learn; one with more
    # keeps its own.
    image_stem_blocks: int = 0
    image_position_std: float = 0.3  # init std of the image row/column tables: the scale of patch content
    audio_layers: int = 2  # a warm start from a checkpoint with fewer grows them (`silence_new_blocks`)
    n_positions: int = 512  # decoder context, in tokens (audio prefix + transcript must fit)
    # Pixels per side the image encoder sees (pictures are resized to it). A warm start from a checkpoint that sees
    # fewer grows to it (`grow_image_size`); one that sees more keeps its own.
    image_size: int = 64
    patch_size: int = 8
    max_audio_frames: int = 1000  # log-mel frames per clip (10 ms each)
    # batches, per rank and step
    text_batch: int = 16
    text_block: int = 128  # text tokens per training window
    image_batch: int = 24
    audio_batch: int = 24
    speech_pool: int = 12_000  # distinct training utterances synthesized up front
    # Share of the training speech (both pools) with no noise; the rest is at 10-30 dB SNR (`speech.render_specs`).
    clean_speech_share: float = 0.0
    # Share of the training speech (both pools) said by flite's and festival's voices (`speech.OTHER_TRAIN_VOICES`)
    # rather than espeak-ng's; which clips, as for `clean_speech_share`, follows from each clip's noise seed.
    other_voice_share: float = 0.0
    mel_warp: float = 0.1  # frequency warp of training clips, up to +/- this fraction; 0 turns it off
    # Draw each transcribe batch from this many batches' worth of clips of similar length (less padding, so a
    # step takes half the time), or 0: from the whole pool. 0, because in a 400-step speech-only ablation, 8 gave
    # 76% validation / 84% held-out WER and 0 gave 59% / 59%.
    speech_window_batches: int = 0
    # Share of `speech_pool` that is runs of 2 to 8 words of the training text spoken (`speech.text_lines`), the
    # rest being the speech set. Its own words are few, and v4.13, which heard nothing else, wrote one of them for
    # any word it did not know (held-out phrases, "turn the light on", "look at the red star": 76.7% WER).
    speech_text_share: float = 0.0
    # Share of `speech_pool` that is runs of 2 to 8 words drawn one by one from the speech set's words and the
    # training text's frequent ones (`speech.word_runs`): in them, unlike in any frame, only the sound tells each word.
    # Over the 600 most frequent words they did not pay: 300 transcribe-only steps from v4.14 with 30% did worse than
    # none, and 800 from v4.28 left `scripts/ablate_speech.py`'s unheard phrases as they were (74.7 against 74.2%).
    # Over 3000, with lines of text, they do a little: 1200 steps from v4.29 took those phrases from 76.4 to 70.4% WER
    # (runs of words at 50%) and to 66.7% (lines of text and runs of words at 25% each), where 1200 steps of the
    # speech set alone took them to 71.7%. But 80 minutes of every task from v4.29 with the second (v4.30, not
    # shipped; a 16000-clip pool) cost more than it gained: held-out phrases 71.0 -> 67.5% WER and typed held-out
    # questions 84.3 -> 86.4%, but the speech set's phrases 12.1 -> 22.0%, the mixed set 3.7 -> 8.1% (a met target
    # lost), and spoken held-out questions stayed at 66.1%.
    speech_word_share: float = 0.0
    # How many of the training text's most frequent words, beside the speech set's own 138, runs of words draw from.
    # Of the 190 words of `scripts/ablate_speech.py`'s unheard phrases, the speech set and the 600 most frequent hold
    # 154 ("dog", "table" and "sky" are not among them), the 3000 most frequent 174.
    speech_word_vocabulary: int = 600
    colour_word_noise: float = 0.25  # chance that a caption's colour word is swapped in the input (not the label)
    ask_batch: int = 32  # typed conversations about a picture, 1 to max_turns questions each
    spoken_ask_batch: int = 16  # conversations whose last question is spoken
    spoken_question_pool: int = 4000  # distinct (scene, conversation, spoken question) triples synthesized up front
    max_turns: int = 3
    # True: after a spoken question the model first writes the words it heard, then `<|answer|>` and the answer, so
    # that it answers from text as it does typed questions (the processor's `transcribes_spoken_questions`). v4.13
    # answered typed test questions 75.7% right and the same spoken 62.5%, though it transcribed them at 1.5% WER;
    # transcribed by its transcribe task and then asked typed, they got 71.4% (v4.14's model card).
    transcribe_spoken_questions: bool = False
    # Share of spoken questions whose recording is another question's: the words heard are given, not learned, and
    # the answer is learned after them, so it comes from the written words and not from the sound. v4.23 answered
    # the words it wrote down 85.4% right when they were asked typed, and 81.8% with the recording before them
    # (about three objects 77.6 and 68.2%); v4.25, trained with 0.3, 85.0 and 82.1% (76.5 and 71.8%).
    swapped_recording_share: float = 0.0
    # Each answer first says what the model sees, then answers from that: "a small red circle left of a large blue
    # square, so red" (`questions.described_answer`). Questions about one object among several are answered more
    # often right when read off the model's own caption than straight from the picture (v4.4, test scenes: colour
    # 84% vs 76%, shape 78% vs 60%, "is there" 78% vs 57%, count 90% vs 75%), so the description does the looking.
    describe_first: bool = False
    # Relation answers first say, step by step, what decides them: "the star above the circle, so the star is above
    # the circle, so you asked below, so no" (`questions.relation_reasoning`). Answered straight away they stayed at
    # the rate of guessing (v4.17: 50.0%), and so with the first one or two of these steps, though the model wrote
    # those right 90% of the time; after all three, the yes/no went 51.0 -> 91.0% in 500 steps of relation questions
    # (`scripts/ablate_relations.py --describe asked`, from a model that had learned the first two).
    relation_reasoning: bool = False
    # Answers to questions about one object written after its name, "circle red" (`questions.named_answer`): for
    # ablations and warm-ups; `ship` refuses such a checkpoint. Not measured as set here (every kind, full names);
    # in `scripts/ablate_questions.py` (colour questions, objects named by shape) the answer "circle red" was
    # learned faster than "red" (73% against 57% at step 250), but 400 steps of it then 150 plain ones did no
    # better than 550 plain ones.
    named_answers: bool = False
    # The sub-batches of each step, comma-separated names from TASKS: fewer for a phase that trains some alone
    # (the speech pools of tasks left out are not built).
    tasks: str = ",".join(TASKS)
    # "ask=4": the step's loss is the weighted mean of the task losses, the typed questions' weighing 4 and every
    # other task's 1. A bigger batch averages more examples of a task and leaves its weight where it was.
    task_weights: str = ""
    clutter_share: float = 0.05  # share of pictures that are no scene at all (`make_clutter`); not paired ones
    # Share of caption scenes redrawn until they hold one of `focus_shapes` (comma-separated names from SHAPES), so
    # that shapes the model reads as each other come more often. Stars read as crosses were 11 of v4.29's 25 shape
    # errors on test captions, and stars and crosses read as each other 45 of its 83 compositional ones. At 0.5 it
    # did not pay: 80 minutes of every task from v4.29 with it (v4.31, not shipped) read them as each other 12 -> 11
    # times on test captions, 45 -> 42 on compositional ones and 27 -> 25 on the held-out renderer's, where a plain
    # continuation moved them as much (v4.28 -> v4.29: 15 -> 12 on test captions, 48 -> 45 compositional).
    focus_share: float = 0.0
    focus_shapes: str = "star,cross"
    # Share of typed-question pictures (not paired ones) that hold one object; None: as scenes come (a third). About
    # one object alone, a question is answered without finding its object, and v4.6 answered those (colour 100%) but,
    # among 2 or 3, named some object's attribute, not the asked one's (colour 49%). 300 question-only steps from
    # v4.6, colour and shape questions about 2-3 objects, moved that from 55% to 64% on validation scenes (scratch
    # ablation, session 12).
    ask_lone_share: float | None = None
    # Share of the typed-question rows that come in pairs (rounded down to whole pairs): the same question in one
    # wording about two objects of one picture whose answers differ (`questions.the_same_question_about_two`), both
    # in the step's batch, so an answer that ignores the object named is wrong for one of them. Paired pictures are
    # scenes of several objects: `clutter_share` and `ask_lone_share` apply to the other rows. A kind that a scene
    # allows no pair of is drawn again with the next scene, so size and position pairs are rarer than colour ones
    # (21-22% of pairs each, against 28%). In `scripts/ablate_questions.py --paired` (400 steps from v4.11, every
    # object kind), pairs with both answers right went 30.6 -> 38.8% and size pairs 0 -> 25%, where four earlier
    # ablations had left size and position at chance.
    paired_share: float = 0.0
    # Share of typed conversations about a scene (not paired ones) whose last question names an object the picture
    # does not hold, answered "there is no star" (`questions.absent_object_question`). Without them v4.39 answered
    # "what colour is the circle?" about a picture with no circle with a colour, at confidence 1.00. Learned fast, and
    # at lr 1.5e-4 at a cost to captions and speech (v4.41, v4.43: the repository README); at 5e-5 the cost was
    # smaller (v4.44, and v4.47 at 0.1, which held held-out wording on the mean of three seeds).
    absent_object_share: float = 0.0
    # Share of those questions asked as relation questions, one of whose two objects is not there ("is the blue
    # circle left of the star?" beside a red circle: `questions.absent_relation_question`); about one object where
    # a scene allows none. v4.47, trained without them, said "there is no ..." about present objects in 0.7-1.8% of
    # its typed questions in held-out wording, and in 4 of 7 such answers the question was a relation question.
    absent_relation_share: float = 0.0
    # The same for the last questions of the spoken question pool (`batches.spoken_question_pool`). At 0.1 (v4.46)
    # the spoken path said "there is no" to 5% of its held-out-wording questions about objects that were there.
    spoken_absent_object_share: float = 0.0
    # False: the losses of typed and spoken questions do not reach the image encoder, which only the captions train.
    # In `scripts/ablate_questions.py` (400 colour-question steps from v4.6, with captions mixed in), a frozen image
    # encoder learned to tell two objects apart by name faster (both answers right 57.5% against 47.5%) and kept
    # more captions (63% exact match against 57%; v4.6 67%). In a run of every task from v4.6 it held captions at
    # 60.9% on the trainer's check (v4.8b) where the same run without it fell to 43.8% (v4.8); v4.9 trained so.
    questions_train_image: bool = True
    init_from: str | None = None  # start from this checkpoint's weights (a new run's schedule); None: from scratch
    # optimization: AdamW, linear warmup then cosine decay, gradient clipping
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # "bf16" autocasts forward passes (2x faster on CPUs with AVX512-BF16), "fp32" does not, and "auto" picks bf16
    # only where the CPU computes it natively (`resolved_precision`).
    precision: str = "auto"
    # evaluation and checkpoints
    eval_every: int = 250
    eval_scenes: int = 64
    eval_utterances: int = 64
    eval_questions: int = 64
    eval_text_windows: int = 40
    eval_text_block: int = 256  # tokens per validation text window; must be below n_positions


def checked(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its precision resolved and its tasks in one spelling (so that the checkpoint, a resume and the
    model card read the same), after every check that can be made before anything is built: a setting that would
    fail minutes later, once the pools are made, or quietly do nothing, is named now."""
    from .checkpoints import checkpoint_problem  # here: checkpoints imports this module

    cfg = dataclasses.replace(cfg, precision=resolved_precision(cfg.precision), tasks=",".join(task_names(cfg)))
    task_weights(cfg)
    focus_shapes(cfg)
    for name in AT_LEAST_ONE:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} {getattr(cfg, name)}: must be at least 1")
    if cfg.max_minutes < 0:
        raise ConfigError(f"max_minutes {cfg.max_minutes}: 0 for no limit, or the minutes to train for")
    if cfg.eval_text_block >= cfg.n_positions:
        raise ConfigError(f"eval_text_block {cfg.eval_text_block}: must be below n_positions ({cfg.n_positions})")
    for name in SHARES:
        if not 0 <= getattr(cfg, name) <= 1:
            raise ConfigError(f"{name} {getattr(cfg, name)}: a share, from 0 to 1")
    if cfg.swapped_recording_share and not cfg.transcribe_spoken_questions:
        raise ConfigError("swapped_recording_share needs transcribe_spoken_questions: without words written down, an "
                          "answer after another question's recording would be learned from nothing")
    if cfg.speech_text_share + cfg.speech_word_share > 1:
        raise ConfigError(f"speech_text_share {cfg.speech_text_share} and speech_word_share {cfg.speech_word_share}: "
                          "together at most the whole speech pool, 1")
    if cfg.init_from and (problem := checkpoint_problem(cfg.init_from)):
        raise ConfigError(f"init_from {cfg.init_from!r}: {problem}")
    return cfg


def resolved_precision(precision: str) -> str:
    """"bf16" or "fp32" for a TrainConfig's `precision`; "auto" is bf16 on CUDA or where oneDNN has native bf16
    kernels (AVX512 and newer). Elsewhere bf16 is emulated: on an AVX2-only EPYC a step took 20 s in bf16 against
    1.8 s in fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision != "auto":
        return precision
    native = torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bf16" if native else "fp32"


def focus_shapes(cfg: TrainConfig) -> frozenset[str]:
    """The shapes of `cfg.focus_shapes`; a name that is no shape is named in the error."""
    from ..data.scenes import SHAPES

    return frozenset(listed_names("focus_shapes", cfg.focus_shapes, SHAPES))


def listed_names(setting: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    """The comma-separated names of a setting's `text`; a name not `allowed`, or none at all, is named in the error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise ConfigError(f"{setting} {text!r}: {', '.join(unknown) or 'none given'}; expected names from {allowed}")
    return names


def task_names(cfg: TrainConfig) -> tuple[str, ...]:
    """The tasks of `cfg.tasks`, in TASKS order; a name that is no task is named in the error."""
    names = listed_names("tasks", cfg.tasks, TASKS)
    return tuple(task for task in TASKS if task in names)


def task_weights(cfg: TrainConfig) -> dict[str, float]:
    """Each trained task's weight in the step's loss: `cfg.task_weights` ("ask=4,caption=0.5"), 1 for a task it does
    not name. A name that is no trained task or is given twice, or a weight that is no finite positive number, is
    named in the error."""
    tasks = task_names(cfg)
    weights, given = dict.fromkeys(tasks, 1.0), set()
    for item in filter(None, (part.strip() for part in cfg.task_weights.split(","))):
        name, _, value = (text.strip() for text in item.partition("="))
        if name not in tasks or name in given:
            raise ConfigError(f"task_weights {cfg.task_weights!r}: {name!r} is not a trained task {tasks} or is "
                              "given twice")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ConfigError(f"task_weights {cfg.task_weights!r}: {item!r} is not name=number") from None
        if not (math.isfinite(weights[name]) and weights[name] > 0):
            raise ConfigError(f"task_weights {cfg.task_weights!r}: {item!r}: a weight must be a number above 0")
        given.add(name)
    return weights

"""Command line: `python -m mmgpt train|evaluate|ship|caption|transcribe|generate ...`.

caption, transcribe and generate stream the answer to stdout as it is written, through the same engine and
allow-listed presets as the app; a line of figures (tokens, time to first token, tokens/s) goes to stderr.
"""

import argparse
import dataclasses
import logging
import os
import sys
import typing
from contextlib import closing
from pathlib import Path

DEFAULT_TRAIN_COMMAND = "python -m mmgpt train"  # the card's, when ship is not told the command that ran
EXIT_USAGE = 2  # bad input, an unknown preset, settings out of range: what argparse uses for a bad command line
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def _add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool:  # --flag / --no-flag
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
            continue
        parser.add_argument(flag, type=_option_type(field.type), default=field.default,
                            help=f"default: {field.default!r}")


def _option_type(annotation):
    """How a command line option of a dataclass field's type is read: as its number type or a string, and for an
    optional field (`float | None`, `str | None`) "None" as None."""
    args = typing.get_args(annotation) or (annotation,)
    read = next((t for t in args if t in (int, float)), str)
    if type(None) not in args:
        return read

    def value_or_none(text: str):
        return None if text == "None" else read(text)

    return value_or_none


def _add_stream_options(parser: argparse.ArgumentParser, task: str, sampling: bool) -> None:
    """--preset and the generation settings; a setting left out takes the preset's default."""
    from .presets import DEFAULT_ENV, presets_for

    names = ", ".join(p.name for p in presets_for(task))
    parser.add_argument("--preset", default=None,
                        help=f"one of: {names} (default: ${DEFAULT_ENV.format(task=task.upper())}, else mmgpt-tiny "
                             "offline or the Hub model on a Space)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="upper bound on generated tokens")
    if sampling:
        parser.add_argument("--temperature", type=float, default=None, help="0 is greedy; above 0 samples")
        parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold, (0, 1]")
        parser.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens; 0 keeps all")
        parser.add_argument("--repetition-penalty", type=float, default=None, help="1 is none; up to 2")
        parser.add_argument("--seed", type=int, default=None, help="a fixed seed gives the same sampled text again")
    parser.add_argument("-v", "--verbose", action="store_true", help="log loading and errors in detail")


def build_parser() -> argparse.ArgumentParser:
    from .evaluate import EvalSizes
    from .requests import TEXT_TASKS
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m mmgpt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train mmgpt from scratch (torchrun for data parallel)")
    _add_dataclass_options(train_parser, TrainConfig)

    eval_parser = commands.add_parser("evaluate", help="held-out metrics table and JSON")
    eval_parser.add_argument("--model", default="assets/mmgpt-tiny")
    eval_parser.add_argument("--text-path", default=None, help="tinyshakespeare.txt (default ../shared/data)")
    eval_parser.add_argument("--out", default="eval.json", help="where the JSON goes")
    eval_parser.add_argument("--seed", type=int, default=1234)
    eval_parser.add_argument("--speech-cache-dir", default=None, help="espeak-ng clips (default: $MMGPT_CACHE_DIR)")
    _add_dataclass_options(eval_parser, EvalSizes)

    ship_parser = commands.add_parser("ship", help="write a checkpoint's weights into assets/ in fp16, then, given "
                                                   "their evaluation, its model card")
    ship_parser.add_argument("--checkpoint", default="runs/mmgpt-tiny/checkpoint")
    ship_parser.add_argument("--eval", default=None,
                             help="the evaluate command's JSON of the shipped weights, for the card; without it, "
                                  "the weights ship with no card, to be evaluated")
    ship_parser.add_argument("--out", default="assets/mmgpt-tiny")
    ship_parser.add_argument("--train-command", default=None,
                             help=f"how it was trained, for the card (default: {DEFAULT_TRAIN_COMMAND})")
    ship_parser.add_argument("--why", default=None,
                             help="JSON: {target key: why it was missed}, e.g. {\"caption_heldout.keyword_accuracy\": ...}")

    average_parser = commands.add_parser("average", help="the mean of the weights of checkpoints of one run's "
                                                         "continuations, as a checkpoint to evaluate and ship")
    average_parser.add_argument("checkpoints", nargs="+", help="checkpoint folders, oldest first: the last a "
                                "training run's, each earlier one a training run's or a shipped model folder")
    average_parser.add_argument("--out", required=True, help="the new checkpoint folder")

    caption = commands.add_parser("caption", help="describe a picture, streaming")
    caption.add_argument("image", help="image file (png, jpeg, gif, webp, bmp, tiff)")
    caption.add_argument("--prompt", default="", help="start of the caption, for captioners that take one")
    _add_stream_options(caption, "image", sampling=False)

    transcribe = commands.add_parser("transcribe", help="transcribe a recording, streaming")
    transcribe.add_argument("audio", help="audio file (wav, flac, mp3, ogg; webm and m4a need ffmpeg)")
    _add_stream_options(transcribe, "audio", sampling=False)

    generate = commands.add_parser("generate", help="continue, chat, summarize, translate or answer, streaming")
    generate.add_argument("prompt", help="the text to continue, the message, the text to summarize, ...")
    generate.add_argument("--task", choices=TEXT_TASKS, default="continue",
                          help="all but continue need an instruction-tuned preset")
    generate.add_argument("--target-language", default="French", help="for --task translate")
    generate.add_argument("--context", default="", help="for --task answer: a passage the answer should come from")
    _add_stream_options(generate, "text", sampling=True)
    return parser


def main(argv: list[str] | None = None, engine=None) -> int:
    """Run one command; returns the exit status. `engine` replaces the default `Engine()` (tests inject one)."""
    args = build_parser().parse_args(argv)
    if args.command in ("train", "evaluate", "ship", "average"):
        try:
            return run_command(args)
        except UsageError as exc:  # before anything long has run: the command line was wrong
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    return stream_command(args, engine)


class UsageError(ValueError):
    """A command line that cannot work, found before the command starts its work."""


def run_command(args: argparse.Namespace) -> int:
    """train, evaluate, ship or average. A setting or file that cannot work is a UsageError, raised before the
    command's work starts (a training run builds its pools for minutes, an evaluation runs for minutes before it
    writes)."""
    if args.command == "train":
        from .train import ConfigError, TrainConfig, train

        try:
            train(TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}))
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        return 0
    if args.command == "evaluate":
        from .evaluate import EvalSizes, evaluate

        _check_checkpoint(args.model, "--model")
        _check_output(args.out, "--out")
        sizes = EvalSizes(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalSizes)})
        if (small := [f.name for f in dataclasses.fields(sizes) if getattr(sizes, f.name) < 1]):
            raise UsageError(f"--{small[0].replace('_', '-')} {getattr(sizes, small[0])}: must be at least 1")
        evaluate(args.model, args.text_path, args.out, sizes, seed=args.seed, cache_dir=args.speech_cache_dir)
        return 0
    if args.command == "average":
        from .train import AverageError, average_checkpoints

        _check_output(args.out, "--out")
        try:
            print(average_checkpoints(args.checkpoints, args.out))
        except AverageError as exc:
            raise UsageError(str(exc)) from None
        return 0
    from .ship import ship, unexplained_misses

    if args.eval is None and (args.why or args.train_command):
        raise UsageError("--why and --train-command are for the model card, which needs --eval")
    _check_checkpoint(args.checkpoint, "--checkpoint", training_run=True)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: a file is there, not a folder")
    results = _json_object(args.eval, "--eval") if args.eval else None
    why = _json_object(args.why, "--why") if args.why else {}
    if not all(isinstance(text, str) for text in why.values()):
        raise UsageError(f"--why {args.why}: each target's why must be a string")
    out = ship(args.checkpoint, args.eval, args.out, args.train_command or DEFAULT_TRAIN_COMMAND, why)
    print(out)
    if args.eval is None:
        print(f"next: python -m mmgpt evaluate --model {out} --out eval.json, then python -m mmgpt ship "
              f"--checkpoint {args.checkpoint} --out {out} --eval eval.json, for the model card", file=sys.stderr)
        return 0
    missing = unexplained_misses(results, why)
    if missing:
        print(f"note: the model card does not yet say why these targets were missed: {', '.join(missing)} "
              "(pass --why why.json)", file=sys.stderr)
    return 0


def _check_checkpoint(path: str, option: str, training_run: bool = False):
    from .train.checkpoints import checkpoint_problem

    if problem := checkpoint_problem(path, training_run):
        raise UsageError(f"{option} {path}: {problem}")


def _check_output(path: str, option: str):
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {path}: the folder {folder} cannot be written to")


def _json_object(path: str, option: str) -> dict:
    import json

    try:
        value = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {path}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option} {path}: holds a JSON {type(value).__name__}, not an object")
    return value


# --- caption, transcribe, generate ------------------------------------------------------------------------------

TASK_OF_COMMAND = {"caption": "image", "transcribe": "audio", "generate": "text"}
SETTINGS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed")


def stream_command(args: argparse.Namespace, engine=None) -> int:
    from .inputs import InputError
    from .loaders import PresetUnavailableError

    _configure_logging(args.verbose)
    if engine is None:
        from .engine import Engine

        engine = Engine(max_loaded=1)
    try:
        preset_name, request, params, notes = _prepare(args, engine)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return _stream_to_terminal(engine, preset_name, request, params)
    except (InputError, ValueError, PresetUnavailableError, TimeoutError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE


def _prepare(args: argparse.Namespace, engine):
    """(preset name, request, generation settings, notes for the user); raises InputError or ValueError."""
    from .inputs import clean_prompt, load_audio, load_image
    from .presets import default_preset
    from .requests import AudioRequest, ImageRequest, TextRequest

    preset_name = args.preset or default_preset(TASK_OF_COMMAND[args.command])
    preset = engine.preset(preset_name)  # an unknown name fails here, before any file is read
    settings = {name: getattr(args, name) for name in SETTINGS if getattr(args, name, None) is not None}
    params = preset.params(**settings)
    notes = []
    if args.command == "caption":
        _check_file(args.image, "image")
        image = load_image(args.image, notes)
        prompt, prompt_notes = clean_prompt(args.prompt, required=False)
        request = ImageRequest(image, prompt)
        notes += prompt_notes
    elif args.command == "transcribe":
        _check_file(args.audio, "audio")
        clip = load_audio(args.audio)
        request = AudioRequest(clip.waveform)
        notes += clip.notes
    else:
        prompt, notes = clean_prompt(args.prompt)
        context, context_notes = clean_prompt(args.context, required=False)
        request = TextRequest(prompt, task=args.task, target_language=args.target_language, context=context)
        notes += context_notes
    return preset_name, request, params, notes


def _check_file(path: str, kind: str) -> None:
    # inputs.py words its messages for uploads to a server; on the command line, name the path instead
    if not Path(path).is_file():
        raise ValueError(f"{kind} file not found: {path}")


def _stream_to_terminal(engine, preset_name, request, params) -> int:
    """Print only the new text of each update as it arrives, then the figures of the last one to stderr."""
    shown, last = "", None
    try:
        with closing(engine.stream(preset_name, request, params)) as updates:
            for last in updates:
                piece = last.text[len(shown):] if last.text.startswith(shown) else "\n" + last.text
                if piece:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                shown = last.text
    except KeyboardInterrupt:  # leaving the `with` closed the stream, which stops the worker thread
        sys.stdout.write("\n")
        print("stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    sys.stdout.write("\n")
    sys.stdout.flush()
    print(format_stats(preset_name, last), file=sys.stderr)
    return 0


def format_stats(preset_name: str, update) -> str:
    ttft = "-" if update.ttft_s is None else f"{update.ttft_s:.2f} s"
    rate = "-" if update.tokens_per_s is None else f"{update.tokens_per_s:.1f}"
    windows = f", {update.windows} audio windows" if update.windows > 1 else ""
    return f"[{preset_name}] {update.tokens} tokens, time to first token {ttft}, {rate} tokens/s{windows}"


def _configure_logging(verbose: bool) -> None:
    """Quiet by default: the one-line error is the user's message; -v shows the log, tracebacks included.

    Leaves logging alone when the host process already configured it (tests, another program calling main()).
    """
    from transformers.utils import logging as hf_logging

    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.CRITICAL)
    if not verbose:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())

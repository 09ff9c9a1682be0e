"""Command line: `python -m mmgpt train|evaluate|caption|transcribe|generate ...`."""

import argparse
import dataclasses
import sys


def _add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        kind = field.type if field.type in (int, float) else str
        parser.add_argument(flag, type=kind, default=field.default, help=f"default: {field.default}")


def main(argv: list[str] | None = None) -> int:
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m mmgpt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train mmgpt from scratch (torchrun for data parallel)")
    _add_dataclass_options(train_parser, TrainConfig)

    eval_parser = commands.add_parser("evaluate", help="held-out metrics table and JSON")
    eval_parser.add_argument("--model", default="assets/mmgpt-tiny")
    eval_parser.add_argument("--text-path", default=None, help="tinyshakespeare.txt (default ../shared/data)")
    eval_parser.add_argument("--out", default="eval.json", help="where the JSON goes")
    eval_parser.add_argument("--scenes", type=int, default=500, help="scenes per split")
    eval_parser.add_argument("--utterances", type=int, default=300, help="utterances per SNR condition")
    eval_parser.add_argument("--seed", type=int, default=1234)

    args = parser.parse_args(argv)
    if args.command == "train":
        from .train import train

        options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
        options = {k: (None if v == "None" else v) for k, v in options.items()}
        train(TrainConfig(**options))
    elif args.command == "evaluate":
        from .evaluate import EvalSizes, evaluate

        evaluate(args.model, args.text_path, args.out, EvalSizes(scenes=args.scenes, utterances=args.utterances),
                 seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

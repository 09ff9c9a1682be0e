"""`python -m benchmarks`: run every benchmark, print a table, write benchmarks/results.json.

    python -m benchmarks                    # everything, full size (minutes); writes benchmarks/results.json
    python -m benchmarks --smoke            # everything at its smallest size (seconds); figures are meaningless
    python -m benchmarks --only streaming --only audio    # updates those two entries of results.json
    python -m benchmarks --only streaming --only audio --out /tmp/r.json
    python -m benchmarks --model runs/mmgpt-tiny/checkpoint   # any saved mmgpt checkpoint

Without --model the shipped assets/mmgpt-tiny is measured, or, until it exists, a random model of its sizes
(--smoke always uses a random model of the test sizes unless --model is given).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

for _name, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                      "GRADIO_ANALYTICS_ENABLED": "False"}.items():
    os.environ.setdefault(_name, _value)  # before gradio_client is imported: it calls the Hub otherwise

from . import (app_http, audio, concurrency, decoder, explain_overhead, memory_ceiling, remote, speech,  # noqa: E402
               startup, streaming)
from .common import REPO_ROOT, Context, ForeignLoad, new_tmp, off_main_thread, resolve_model  # noqa: E402

# the issues' order
BENCHMARKS = [streaming, app_http, decoder, memory_ceiling, audio, startup, concurrency, explain_overhead, speech, remote]
# start-up needs a cold app
RUN_ORDER = [streaming, startup, app_http, decoder, memory_ceiling, audio, concurrency, explain_overhead, speech, remote]
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every benchmark at its smallest size, in seconds")
    parser.add_argument("--model", help="mmgpt checkpoint directory (default: assets/mmgpt-tiny, else random)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    parser.add_argument("--only", action="append", choices=[b.NAME for b in BENCHMARKS],
                        help="run only this benchmark (repeatable)")
    return parser.parse_args(argv)


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    backend = next((line.split(":")[-1].strip() for line in torch.__config__.parallel_info().splitlines()
                    if "parallel backend" in line.lower()), "unknown")
    import gradio
    import numpy
    import transformers

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_parallel_backend": backend,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gradio": gradio.__version__,
        "numpy": numpy.__version__,
    }


def model_sizes(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    return {key: config.get(key) for key in ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions")}


def print_table(results: dict):
    rows = [("benchmark", "figure", "value", "unit", "target", "met")]
    for name, result in results.items():
        if "error" in result:
            rows.append((name, "ERROR", result["error"][:60], "", "", ""))
            continue
        for figure, f in result["figures"].items():
            met = "" if f["met"] is None else ("yes" if f["met"] else "NO")
            rows.append((name, figure, f"{f['value']:.4g}", f["unit"], f["target"] or "", met))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def merged(earlier: dict, partial: dict, command: str) -> dict:
    """`earlier` results with the benchmarks of a partial (`--only`) run replaced by that run's, each carrying its
    run's `meta` in `run`: the other benchmarks' figures are kept, and every entry says when it was measured."""
    fresh = {name: {**result, "run": {"command": command, **partial["meta"]}}
             for name, result in partial["benchmarks"].items()}
    benchmarks = {**earlier.get("benchmarks", {}), **fresh}
    return {**earlier, "benchmarks": {b.NAME: benchmarks[b.NAME] for b in BENCHMARKS if b.NAME in benchmarks}}


def main(argv=None) -> int:
    args = parse_args(argv)
    selected = [b for b in RUN_ORDER if args.only is None or b.NAME in args.only]
    tmp = new_tmp()
    started = time.perf_counter()
    started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    model_dir, kind = resolve_model(args.model, args.smoke, tmp)
    sizes = model_sizes(model_dir)  # read now: a random model lives in `tmp`, which is removed below
    ctx = Context(smoke=args.smoke, model_dir=model_dir, model_kind=kind, tmp=tmp)
    print(f"mmgpt benchmarks{' (smoke: smallest sizes, figures meaningless)' if args.smoke else ''}: "
          f"model {model_dir} ({kind} weights)", flush=True)
    results, failed = {}, []
    try:
        for bench in selected:
            print(f"== {bench.NAME}: {bench.TITLE}", flush=True)
            t0 = time.perf_counter()
            foreign = ForeignLoad()
            try:
                with foreign:  # each in a thread of its own: see common.off_main_thread
                    result = off_main_thread(lambda: bench.run(ctx))
                ctx.results[bench.NAME] = result
                results[bench.NAME] = result.as_json()
            except Exception as exc:  # one broken benchmark must not lose the others' figures
                traceback.print_exc()
                failed.append(bench.NAME)
                results[bench.NAME] = {"error": f"{type(exc).__name__}: {exc}"}
            results[bench.NAME].update(seconds=round(time.perf_counter() - t0, 1),
                                       other_processes_cpu_cores=round(getattr(foreign, "cores", float("nan")), 2))
            print(f"   {bench.NAME} took {time.perf_counter() - t0:.1f} s; other processes used "
                  f"{results[bench.NAME]['other_processes_cpu_cores']} cores meanwhile", flush=True)
    finally:
        ctx.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ordered = {b.NAME: results[b.NAME] for b in BENCHMARKS if b.NAME in results}
    report = {
        "meta": {
            "started_utc": started_utc,
            "seconds": round(time.perf_counter() - started, 1),
            "smoke": args.smoke,
            "model": {"path": None if kind == "random" else os.path.relpath(model_dir, REPO_ROOT),
                      "weights": kind, "sizes": sizes},
            "load_average_before_after": [round(x, 2) for x in (*load_before[:1], *os.getloadavg()[:1])],
            "machine": machine(),
        },
        "benchmarks": ordered,
    }
    written = report
    if args.only and args.out.exists():
        command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
        written = merged(json.loads(args.out.read_text()), report, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(written, indent=1, ensure_ascii=False) + "\n")
    print()
    print_table(ordered)
    print(f"\nwrote {args.out} in {report['meta']['seconds']} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

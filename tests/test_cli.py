"""`python -m mmgpt caption|transcribe|generate`: streams the engine's text to stdout, figures to stderr, and turns
bad input into one line on stderr with exit status 2.

The in-process tests inject an engine whose "mmgpt-tiny" preset is a tiny random checkpoint saved to a temporary
directory; two subprocess tests run the real entry point.
"""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from mmgpt.__main__ import main
from mmgpt.audio import SAMPLE_RATE
from mmgpt.data import scene_dataset
from mmgpt.engine import AudioRequest, Engine, ImageRequest, TextRequest
from mmgpt.inputs import load_audio, load_image
from mmgpt.model.testing import save_random_checkpoint
from mmgpt.presets import REPO_ROOT, Preset, get_preset
from mmgpt.requests import StreamUpdate

MAX_NEW_TOKENS = 12
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.fixture(autouse=True)
def offline_defaults(monkeypatch):
    """The offline default preset (mmgpt-tiny) whatever the environment running the tests says, and whether or not
    the pip package of whisper-tiny.en (the audio default where it is installed) is."""
    from mmgpt import presets

    for task in ("IMAGE", "AUDIO", "TEXT"):
        monkeypatch.delenv(f"MMGPT_DEFAULT_{task}", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setattr(presets, "pip_installed", lambda requirement: False)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    directory = save_random_checkpoint(tmp_path_factory.mktemp("mmgpt-tiny"), seed=2)
    preset = Preset("mmgpt-tiny", ("image", "audio", "text"), "mmgpt", str(directory), "tiny random mmgpt", 1,
                    defaults={"max_new_tokens": MAX_NEW_TOKENS, "repetition_penalty": 2.0})
    return Engine(device="cpu", timeout_s=60, presets={preset.name: preset})


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "scene.png"
    scene_dataset("test", 1, seed=5)[0].image.save(path)
    return path


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "tone.wav"
    t = np.arange(int(1.5 * SAMPLE_RATE)) / SAMPLE_RATE
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SAMPLE_RATE)
    return path


class RecordingStdout:
    """Stands in for sys.stdout and keeps every write, so a test can see the text arrive piece by piece."""

    def __init__(self):
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self):
        pass

    @property
    def text(self) -> str:
        return "".join(self.writes)


def run_cli(argv, engine, monkeypatch, capsys) -> tuple[int, RecordingStdout, str]:
    stdout = RecordingStdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    status = main(argv, engine=engine)
    return status, stdout, capsys.readouterr().err


def last_line(err: str) -> str:
    """The figures line; loading may print progress above it when the host (pytest) owns logging."""
    return err.strip().splitlines()[-1]


def engine_text(engine, request, **settings) -> str:
    params = engine.preset("mmgpt-tiny").params(**settings)
    return list(engine.stream("mmgpt-tiny", request, params))[-1].text


# --- streaming -------------------------------------------------------------------------------------------------


class ScriptedEngine:
    """An engine that streams a fixed script: shows exactly what the CLI does with each update."""

    def __init__(self, texts):
        self.texts = texts
        self.requests = []

    def preset(self, name):
        return get_preset(name)

    def stream(self, preset_name, request, params=None, cancel=None):
        self.requests.append((preset_name, request, params))
        for i, text in enumerate(self.texts):
            yield StreamUpdate(text, tokens=i + 1, ttft_s=0.25, tokens_per_s=40.0 if i else None, done=False)
        yield StreamUpdate(self.texts[-1], tokens=len(self.texts), ttft_s=0.25, tokens_per_s=40.0, done=True)


def test_each_update_prints_only_its_new_text_then_the_figures(monkeypatch, capsys):
    scripted = ScriptedEngine(["But", "But soft,", "But soft, what light"])
    status, stdout, err = run_cli(["generate", "ROMEO:", "--max-new-tokens", "3"], scripted, monkeypatch, capsys)

    assert status == 0
    assert stdout.writes == ["But", " soft,", " what light", "\n"]
    assert err.strip() == "[mmgpt-tiny] 3 tokens, time to first token 0.25 s, 40.0 tokens/s"
    (preset_name, request, params), = scripted.requests
    assert preset_name == "mmgpt-tiny"  # the offline default
    assert request == TextRequest("ROMEO:")
    assert params.max_new_tokens == 3 and params.temperature == 0.0  # the flag, then the preset's defaults


class InterruptedEngine(ScriptedEngine):
    """Ctrl-C arrives while the answer streams."""

    closed = False

    def stream(self, preset_name, request, params=None, cancel=None):
        try:
            yield StreamUpdate("But", tokens=1, ttft_s=0.25, tokens_per_s=None, done=False)
            raise KeyboardInterrupt
        finally:
            self.closed = True  # the real engine stops its worker thread here


def test_ctrl_c_closes_the_stream_and_exits_130(monkeypatch, capsys):
    interrupted = InterruptedEngine(["But"])
    status, stdout, err = run_cli(["generate", "ROMEO:"], interrupted, monkeypatch, capsys)

    assert status == 130
    assert interrupted.closed
    assert stdout.text == "But\n" and err == "stopped\n"


def test_generate_prints_the_engines_greedy_text(engine, monkeypatch, capsys):
    status, stdout, err = run_cli(["generate", "ROMEO: But soft"], engine, monkeypatch, capsys)

    assert status == 0
    expected = engine_text(engine, TextRequest("ROMEO: But soft"))
    assert expected and stdout.text == expected + "\n"
    assert last_line(err).startswith(f"[mmgpt-tiny] {MAX_NEW_TOKENS} tokens, time to first token ")


def test_caption_prints_the_engines_caption(engine, scene_png, monkeypatch, capsys):
    status, stdout, err = run_cli(["caption", str(scene_png), "--preset", "mmgpt-tiny"], engine, monkeypatch, capsys)

    assert status == 0, err
    expected = engine_text(engine, ImageRequest(load_image(str(scene_png))))
    assert expected and stdout.text == expected + "\n"
    assert last_line(err).endswith("tokens/s")


def test_transcribe_prints_the_engines_transcript(engine, tone_wav, monkeypatch, capsys):
    status, stdout, err = run_cli(["transcribe", str(tone_wav), "--max-new-tokens", "6"], engine, monkeypatch, capsys)

    assert status == 0, err
    expected = engine_text(engine, AudioRequest(load_audio(str(tone_wav)).waveform), max_new_tokens=6)
    assert expected and stdout.text == expected + "\n"
    assert last_line(err).startswith("[mmgpt-tiny] 6 tokens")


def test_a_seed_gives_the_same_sampled_text_again(engine, monkeypatch, capsys):
    argv = ["generate", "ROMEO:", "--temperature", "1.0", "--top-k", "50", "--top-p", "0.9", "--seed", "7"]
    first = run_cli(argv, engine, monkeypatch, capsys)[1].text
    second = run_cli(argv, engine, monkeypatch, capsys)[1].text

    assert first == second
    sampled = engine_text(engine, TextRequest("ROMEO:"), temperature=1.0, top_k=50, top_p=0.9, seed=7)
    assert first == sampled + "\n"


# --- errors: one line on stderr, exit status 2 ----------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["generate", "ROMEO:", "--preset", "no-such-model"], 'Unknown model "no-such-model"'),
    (["generate", "ROMEO:", "--temperature", "5"], "temperature must be between 0 and 2, got 5"),
    (["generate", "ROMEO:", "--top-p", "0"], "top_p must be above 0"),
    (["generate", "   "], "The prompt is empty"),
    (["generate", "ROMEO:", "--task", "chat"], '"mmgpt-tiny" cannot chat'),
    (["caption", "no/such/picture.png"], "image file not found: no/such/picture.png"),
    (["transcribe", "no/such/recording.wav"], "audio file not found: no/such/recording.wav"),
])
def test_bad_requests_exit_2_with_one_line(argv, message, engine, monkeypatch, capsys):
    status, stdout, err = run_cli(argv, engine, monkeypatch, capsys)

    assert status == 2
    assert stdout.text == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_unreadable_files_exit_2_with_the_inputs_message(engine, tmp_path, monkeypatch, capsys):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is not a picture")
    silence = tmp_path / "silence.wav"
    soundfile.write(silence, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)

    for argv, message in ((["caption", str(not_an_image)], "not a picture"),
                          (["transcribe", str(silence)], "No speech was heard")):
        status, stdout, err = run_cli(argv, engine, monkeypatch, capsys)
        assert status == 2 and stdout.text == ""
        assert err.count("\n") == 1 and message in err, err


def test_a_preset_that_is_not_installed_exits_2(tmp_path, monkeypatch, capsys):
    missing = Preset("mmgpt-tiny", ("image", "audio", "text"), "mmgpt", str(tmp_path / "absent"), "missing", 1)
    status, stdout, err = run_cli(["generate", "ROMEO:"], Engine(device="cpu", presets={missing.name: missing}),
                                  monkeypatch, capsys)

    assert status == 2
    assert err.startswith('error: Model "mmgpt-tiny" is not installed') and err.count("\n") == 1


# --- the real entry point --------------------------------------------------------------------------------------


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "mmgpt", *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=120)


def test_help_lists_the_commands():
    result = run_module("--help")

    assert result.returncode == 0, result.stderr
    for command in ("train", "evaluate", "caption", "transcribe", "generate"):
        assert command in result.stdout


def test_a_missing_file_exits_2_with_a_clear_message(tmp_path):
    missing = tmp_path / "nowhere.png"
    result = run_module("caption", str(missing))

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"error: image file not found: {missing}\n"


# --- evaluate and ship -------------------------------------------------------------------------------------------

TINY_EVAL = ("--text-windows", "2", "--text-block", "16", "--scenes", "4", "--utterances", "3", "--per-voice", "1",
             "--questions", "1", "--batch", "8")


def _evaluate(model_dir, out, tmp_dir) -> tuple[int, str]:
    corpus = tmp_dir / "corpus.txt"
    corpus.write_text("ROMEO: But soft, what light through yonder window breaks?\nJULIET: O Romeo, Romeo!\n" * 40)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["evaluate", "--model", str(model_dir), "--out", str(out), "--text-path", str(corpus),
                       "--speech-cache-dir", str(tmp_dir / "speech"), "--seed", "3", *TINY_EVAL])
    return status, printed.getvalue()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny random checkpoint that can take questions, evaluated with tiny sizes: (its dir, JSON, printed table)."""
    root = tmp_path_factory.mktemp("evaluate")
    model = save_random_checkpoint(root / "model", seed=3, max_audio_frames=1000)  # room for a 3-object caption
    status, printed = _evaluate(model, root / "eval.json", root)
    assert status == 0
    return model, root / "eval.json", printed


def _value(results: dict, dotted: str):
    for part in dotted.split("."):
        results = results[part]
    return results


@needs_espeak
def test_evaluate_writes_every_figure_and_prints_it_beside_its_target(evaluated):
    from mmgpt.data.questions import OBJECT_KINDS, QUESTION_KINDS
    from mmgpt.data.speech import OTHER_TEST_VOICES, TEST_VOICES
    from mmgpt.evaluate import QA_SETS, TARGETS, figures

    _, out, printed = evaluated
    results = json.loads(out.read_text())
    for key in TARGETS:
        assert isinstance(_value(results, key), float), key
    for key in QA_SETS:  # about an absent object, only the kinds that name one object are asked
        asked = OBJECT_KINDS if key.startswith("qa_absent") else QUESTION_KINDS
        assert set(results[key]["by_kind"]) == set(asked), key
        objects = results[key]["by_objects"]  # every question counted once, under its picture's number of objects
        assert set(objects) <= {"1", "2", "3"} and sum(o["n"] for o in objects.values()) == results[key]["n"], key
        assert 0 <= results[key]["accuracy"] <= 100 and 0 <= results[key]["said_absent"] <= 100
    for key in ("qa_absent", "qa_absent_spoken"):
        assert results[key]["accuracy"] <= results[key]["said_absent"]  # right only when it says so
    assert results["qa_absent_spoken"]["n"] == results["qa_absent"]["n"]  # the same questions, spoken
    paired = results["qa_paired"]  # the same question about two objects of a test scene: one row per kind
    assert set(paired["by_kind"]) <= set(OBJECT_KINDS)
    assert sum(kind["n"] for kind in paired["by_kind"].values()) == paired["n"] > 0
    assert 0 <= paired["both_right"] <= paired["answers_differ"] <= 100  # two right answers always differ
    for key in ("speech_captions", "speech_phrases_heldout", "qa_spoken", "qa_heldout_spoken", "qa_absent_spoken"):
        assert set(results[key]["by_voice"]) == set(TEST_VOICES), key  # each text in every held-out voice
    for key in ("speech_captions_other_voices", "speech_phrases_other_voices", "speech_phrases_heldout_other_voices"):
        assert set(results[key]["by_voice"]) == set(OTHER_TEST_VOICES), key
    assert set(results["qa_spoken_other_voices"]["by_voice"]) <= set(OTHER_TEST_VOICES)
    assert set(results["speech_phrases"]["by_voice"]) <= set(TEST_VOICES)  # the speech set draws voices itself
    assert set(results["caption_heldout"]["by_background"]) and set(results["caption_heldout"]["by_style"])
    for figure in figures(results):
        row = next(line for line in printed.splitlines() if line.startswith(figure.label + " "))
        if figure.target:
            assert ("yes" if figure.met else "NO") == row.split()[-1], row


@needs_espeak
def test_evaluate_a_checkpoint_from_before_questions_reports_them_not_available(tmp_path, monkeypatch):
    from mmgpt.evaluate import QA_SETS
    from mmgpt.model import processing_mmgpt

    with monkeypatch.context() as patch:  # a tokenizer without <|ask|> and <|answer|>, as mmgpt-tiny v3's
        patch.setattr(processing_mmgpt, "SPECIAL_TOKENS", processing_mmgpt.SPECIAL_TOKENS[:8])
        model = save_random_checkpoint(tmp_path / "v3", seed=1, max_audio_frames=1000)
    status, printed = _evaluate(model, tmp_path / "eval.json", tmp_path)

    assert status == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    for key in (*QA_SETS, "qa_paired"):
        assert results[key]["available"] is False and "<|ask|>" in results[key]["reason"]
    assert re.search(r"^Questions, typed, question set's wording: accuracy, % +not available +≥ 90$", printed, re.M)
    assert isinstance(results["caption_heldout"]["keyword_accuracy"], float)


def _trained_checkpoint(model_dir, tmp_path, name="checkpoint"):
    """`model_dir` as training leaves a checkpoint: its files and a trainer state."""
    import dataclasses

    import torch

    from mmgpt.train import TrainConfig

    checkpoint = tmp_path / name
    shutil.copytree(model_dir, checkpoint)
    torch.save({"step": 5, "train_seconds": 60.0, "config": dataclasses.asdict(TrainConfig())},
               checkpoint / "trainer_state.pt")
    return checkpoint


@needs_espeak
def test_ship_writes_the_weights_in_fp16_that_load_as_fp32_and_no_card_until_they_are_evaluated(
        evaluated, tmp_path, capsys):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    checkpoint, shipped = _trained_checkpoint(evaluated[0], tmp_path), tmp_path / "shipped"
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))  # as a bf16 run might save
    shipped.mkdir()
    for stale in ("README.md", "eval.json"):  # the card of the weights shipped before
        (shipped / stale).write_text("the last model's figures")

    assert main(["ship", "--checkpoint", str(checkpoint), "--out", str(shipped)]) == 0

    assert not (shipped / "README.md").exists() and not (shipped / "eval.json").exists()
    assert "python -m mmgpt evaluate --model" in capsys.readouterr().err
    with safe_open(shipped / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float16}
    trained = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(shipped)
    assert loaded.dtype == torch.float32
    for name, weight in trained.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], weight.half().float(), rtol=0, atol=0)


def test_average_writes_the_mean_of_the_weights_a_checkpoint_that_ships_and_names_what_it_averaged(tmp_path):
    import torch
    from safetensors.torch import load_file

    sources = [_trained_checkpoint(save_random_checkpoint(tmp_path / f"model{seed}", seed=seed), tmp_path,
                                   f"checkpoint{seed}") for seed in (1, 2, 3)]
    averaged = tmp_path / "averaged"
    assert main(["average", *map(str, sources), "--out", str(averaged)]) == 0

    weights = [load_file(source / "model.safetensors") for source in sources]
    mean = load_file(averaged / "model.safetensors")
    assert mean.keys() == weights[0].keys()
    for name, tensor in mean.items():
        torch.testing.assert_close(tensor, (weights[0][name] + weights[1][name] + weights[2][name]) / 3)
    assert torch.load(averaged / "trainer_state.pt", weights_only=False)["averaged"] == list(map(str, sources))
    assert main(["average", *map(str, sources[:2]), "--out", str(averaged)]) == 0  # an earlier mean is replaced
    for name, tensor in load_file(averaged / "model.safetensors").items():
        torch.testing.assert_close(tensor, (weights[0][name] + weights[1][name]) / 2)
    assert main(["ship", "--checkpoint", str(averaged), "--out", str(tmp_path / "shipped")]) == 0


def test_average_takes_a_shipped_model_as_an_earlier_checkpoint_widening_its_fp16_weights(tmp_path):
    """The weights a run started from may survive only as shipped (fp16, with no trainer state): the mean of them and
    of the run's checkpoint is the run's own checkpoint pulled half-way back to its start."""
    import torch
    from safetensors.torch import load_file

    start, run = (_trained_checkpoint(save_random_checkpoint(tmp_path / f"model{seed}", seed=seed), tmp_path,
                                      f"checkpoint{seed}") for seed in (1, 2))
    shipped, averaged = tmp_path / "shipped", tmp_path / "averaged"
    assert main(["ship", "--checkpoint", str(start), "--out", str(shipped)]) == 0
    assert main(["average", str(shipped), str(run), "--out", str(averaged)]) == 0

    half, trained = load_file(shipped / "model.safetensors"), load_file(run / "model.safetensors")
    for name, tensor in load_file(averaged / "model.safetensors").items():
        assert tensor.dtype == trained[name].dtype
        torch.testing.assert_close(tensor, (half[name].double() + trained[name].double()).div(2).to(tensor.dtype))
    assert torch.load(averaged / "trainer_state.pt", weights_only=False)["averaged"] == [str(shipped), str(run)]


def _differing_tokenizer(checkpoint):
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = tokenizer["added_tokens"][:-1]
    (checkpoint / "tokenizer.json").write_text(json.dumps(tokenizer))


@pytest.mark.parametrize("problem, named", [
    ("one checkpoint", "at least two checkpoints"),
    ("a model of another size", "differ in config.json"),
    ("another tokenizer", "differ in tokenizer.json"),
    ("a shipped folder", "not a training run's checkpoint (no trainer_state.pt there)"),
    ("out is a source", "one of the checkpoints averaged"),
    ("out holds the sources", "holds checkpoints averaged"),
    ("out is another folder", "already there, and not an earlier mean"),
])
def test_average_refuses_checkpoints_that_are_not_of_one_model_naming_why(problem, named, tmp_path, capsys):
    first = _trained_checkpoint(save_random_checkpoint(tmp_path / "model1", seed=1), tmp_path, "first")
    second = _trained_checkpoint(save_random_checkpoint(tmp_path / "model2", seed=2), tmp_path, "second")
    out = tmp_path / "averaged"
    if problem == "a model of another size":
        shutil.rmtree(second)
        second = _trained_checkpoint(save_random_checkpoint(tmp_path / "model3", seed=2, n_layer=1), tmp_path, "second")
    elif problem == "another tokenizer":
        _differing_tokenizer(second)
    elif problem == "a shipped folder":
        (second / "trainer_state.pt").unlink()
    elif problem == "out is a source":
        out = second
    elif problem == "out holds the sources":
        out = tmp_path
    elif problem == "out is another folder":
        out.mkdir()
        (out / "notes.txt").write_text("kept")
    sources = [first] if problem == "one checkpoint" else [first, second]
    assert main(["average", *map(str, sources), "--out", str(out)]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "averaged").exists() or (tmp_path / "averaged" / "notes.txt").read_text() == "kept"
    assert first.is_dir() and second.is_dir()


def test_ship_leaves_the_weights_it_replaces_whole_for_a_process_still_reading_them(tmp_path):
    first, second = (_trained_checkpoint(save_random_checkpoint(tmp_path / f"model{seed}", seed=seed), tmp_path,
                                         f"checkpoint{seed}") for seed in (1, 2))
    shipped = tmp_path / "shipped"
    assert main(["ship", "--checkpoint", str(first), "--out", str(shipped)]) == 0
    before = (shipped / "model.safetensors").read_bytes()

    with open(shipped / "model.safetensors", "rb") as still_open:  # as a server or a training run maps them
        assert main(["ship", "--checkpoint", str(second), "--out", str(shipped)]) == 0
        assert still_open.read() == before
    assert (shipped / "model.safetensors").read_bytes() != before
    assert not list(shipped.glob("*.partial"))


@pytest.mark.parametrize("card_option", [["--why", "why.json"], ["--train-command", "python -m mmgpt train"]])
def test_ship_without_an_evaluation_refuses_the_options_of_a_card_it_cannot_write(card_option, tmp_path, capsys):
    status = main(["ship", "--checkpoint", str(tmp_path / "checkpoint"), "--out", str(tmp_path / "shipped"),
                   *card_option])

    assert status == 2
    assert "needs --eval" in capsys.readouterr().err
    assert not (tmp_path / "shipped").exists()


@needs_espeak
def test_ship_refuses_an_evaluation_that_names_no_weights_as_of_a_hub_id_or_sharded_ones(evaluated, tmp_path):
    from mmgpt.ship import ship, weights_sha256

    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "model-00001-of-00002.safetensors").write_bytes(b"")
    results = {**json.loads(evaluated[1].read_text()), "weights_sha256": weights_sha256(tmp_path / "sharded")}
    (tmp_path / "eval.json").write_text(json.dumps(results))
    assert results["weights_sha256"] is None

    with pytest.raises(ValueError, match="measured other weights"):
        ship(_trained_checkpoint(evaluated[0], tmp_path), tmp_path / "eval.json", tmp_path / "shipped",
             "python -m mmgpt train")


@needs_espeak
def test_ship_refuses_an_evaluation_of_other_weights_than_it_ships(evaluated, tmp_path):
    from mmgpt.ship import ship

    _, fp32_evaluation, _ = evaluated  # measured on the checkpoint's fp32 weights, not the fp16 ones that ship

    with pytest.raises(ValueError, match="measured other weights"):
        ship(_trained_checkpoint(evaluated[0], tmp_path), fp32_evaluation, tmp_path / "shipped",
             "python -m mmgpt train")
    assert not (tmp_path / "shipped").exists()


@needs_espeak
def test_ship_writes_a_card_with_every_figure_beside_its_target_and_a_why_for_each_miss(evaluated, tmp_path, capsys):
    from mmgpt.evaluate import TARGETS
    from mmgpt.ship import NOT_EXPLAINED

    checkpoint, shipped = _trained_checkpoint(evaluated[0], tmp_path), tmp_path / "shipped"
    evaluation = tmp_path / "eval.json"
    assert main(["ship", "--checkpoint", str(checkpoint), "--out", str(shipped)]) == 0
    assert _evaluate(shipped, evaluation, evaluated[0].parent)[0] == 0  # the fixture's speech cache
    why = tmp_path / "why.json"
    why.write_text(json.dumps({"caption_test.exact_match": "the weights are random"}))

    status = main(["ship", "--checkpoint", str(checkpoint), "--eval", str(evaluation), "--out", str(shipped),
                   "--why", str(why)])

    assert status == 0
    card = (shipped / "README.md").read_text()
    assert "| figure | in-distribution | out-of-distribution | target | met |" in card
    assert "**Why:** the weights are random" in card
    missed = [key for key in TARGETS if key != "checkpoint_mb"]  # a random model misses every other target
    assert card.count(f"**Why:** {NOT_EXPLAINED}") == len(missed) - 1
    assert "note: the model card does not yet say why" in capsys.readouterr().err
    assert json.loads((shipped / "eval.json").read_text()) == json.loads(evaluation.read_text())


@pytest.mark.parametrize("named_from_step", [0, 5])
def test_ship_refuses_a_checkpoint_trained_to_name_the_object_before_its_answer(tmp_path, named_from_step):
    import dataclasses

    import torch

    from mmgpt.ship import ship
    from mmgpt.train import TrainConfig

    named, plain = dataclasses.asdict(TrainConfig(named_answers=True)), dataclasses.asdict(TrainConfig())
    state = ({"config": named} if named_from_step == 0 else
             {"config": plain, "resumes": [{"step": named_from_step, "config": named}]})
    (tmp_path / "checkpoint").mkdir()
    torch.save({"step": 9, "train_seconds": 1.0, **state}, tmp_path / "checkpoint" / "trainer_state.pt")
    with pytest.raises(ValueError, match="--named-answers"):
        ship(tmp_path / "checkpoint", tmp_path / "eval.json", tmp_path / "shipped", "python -m mmgpt train")
    assert not (tmp_path / "shipped").exists()


@pytest.mark.parametrize("argv, describe_first", [([], False), (["--describe-first"], True),
                                                  (["--describe-first", "--no-describe-first"], False)])
def test_a_yes_or_no_training_setting_is_a_flag(argv, describe_first):
    from mmgpt.__main__ import build_parser

    options = build_parser().parse_args(["train", "--steps", "7", *argv])
    assert (options.describe_first, options.steps) == (describe_first, 7)


@pytest.mark.parametrize("argv, share", [([], None), (["--ask-lone-share", "0.1"], 0.1),
                                         (["--ask-lone-share", "None"], None)])
def test_a_training_setting_that_may_be_unset_is_read_as_a_number(argv, share):
    from mmgpt.__main__ import build_parser

    assert build_parser().parse_args(["train", *argv]).ask_lone_share == share


def test_a_training_setting_that_may_be_unset_names_a_bad_number(capsys):
    from mmgpt.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--ask-lone-share", "a tenth"])
    assert "--ask-lone-share" in capsys.readouterr().err


@pytest.mark.parametrize("argv, init_from", [([], None), (["--init-from", "assets/mmgpt-tiny"], "assets/mmgpt-tiny"),
                                             (["--init-from", "None"], None)])
def test_a_training_path_that_may_be_unset_is_none_when_given_none(argv, init_from):
    from mmgpt.__main__ import build_parser

    assert build_parser().parse_args(["train", *argv]).init_from == init_from


def test_a_training_path_that_must_be_set_keeps_the_word_none():
    from mmgpt.__main__ import build_parser

    assert build_parser().parse_args(["train", "--out-dir", "None"]).out_dir == "None"


# --- train, evaluate and ship: a command line that cannot work is named before the work starts ----------------------


@pytest.mark.parametrize("argv, named", [
    (["--precision", "bf61"], "precision 'bf61'"),
    (["--task-weights", "ask=x"], "'ask=x' is not name=number"),
    (["--tasks", "captoin"], "captoin"),
    (["--paired-share", "2"], "paired_share 2.0"),
    (["--text-batch", "0"], "text_batch 0: must be at least 1"),
    (["--ask-batch", "0"], "ask_batch 0"),
    (["--eval-every", "0"], "eval_every 0"),
    (["--max-turns", "0"], "max_turns 0"),
    (["--steps", "-5"], "steps -5"),
    (["--max-minutes", "-1"], "max_minutes -1.0"),
    (["--eval-text-block", "512"], "eval_text_block 512: must be below n_positions (512)"),
    (["--init-from", "no/such/checkpoint"], "init_from 'no/such/checkpoint': not a checkpoint (no config.json there)"),
])
def test_a_training_setting_that_cannot_work_exits_2_naming_it_before_anything_is_built(argv, named, tmp_path,
                                                                                       capsys):
    out = tmp_path / "run"
    assert main(["train", "--out-dir", str(out), *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and named in error and "Traceback" not in error, error
    assert not out.exists(), "nothing is built or written for a command that cannot work"


def test_evaluate_names_a_model_or_an_output_folder_that_is_not_there_before_it_evaluates(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nowhere")]) == 2
    assert f"--model {tmp_path / 'nowhere'}: not a checkpoint (no config.json there)" in capsys.readouterr().err
    assert main(["evaluate", "--model", "assets/mmgpt-tiny", "--out", str(tmp_path / "no" / "eval.json")]) == 2
    assert f"the folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--model", "assets/mmgpt-tiny", "--out", str(tmp_path / "e.json"), "--batch", "0"]) == 2
    assert "--batch 0: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("problem, named", [
    ("a shipped folder", "not a training run's checkpoint (no trainer_state.pt there)"),
    ("no evaluation file", "--eval"),
    ("a why that is no JSON", "not JSON"),
    ("a why that is a list", "holds a JSON list, not an object"),
    ("a why that is no text", "each target's why must be a string"),
    ("a file where the folder goes", "a file is there, not a folder"),
])
def test_ship_names_a_file_that_cannot_work_before_it_writes_anything(problem, named, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    for name in ("config.json", "trainer_state.pt"):  # looked at only for being there: ship never runs
        (checkpoint / name).write_bytes(b"")
    (tmp_path / "eval.json").write_text("{}")
    why = {"a why that is no JSON": "{not json", "a why that is a list": '["x"]',
           "a why that is no text": '{"caption_test.exact_match": 3}'}.get(problem, "{}")
    (tmp_path / "why.json").write_text(why)
    out = tmp_path / "shipped"
    if problem == "a file where the folder goes":
        out.write_text("")
    argv = ["ship", "--checkpoint", str(checkpoint if problem != "a shipped folder" else "assets/mmgpt-tiny"),
            "--out", str(out), "--eval", str(tmp_path / ("missing.json" if problem == "no evaluation file" else
                                                          "eval.json")), "--why", str(tmp_path / "why.json")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and named in error and "Traceback" not in error, error
    assert out.is_file() if problem == "a file where the folder goes" else not out.exists()

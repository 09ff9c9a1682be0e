"""The training loop: one step per sub-batch of every task, data-parallel under torchrun, the learning-rate
schedule, the quick validation every `eval_every` steps, and the checkpoint a resume continues from."""

import dataclasses
import json
import math
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..model import MMGPTForCausalLM, MMGPTProcessor
from .batches import TaskBatches
from .checkpoints import TRAINING_STATE, answer_after, fresh_model, recover_checkpoint, save_checkpoint, warm_start
from .config import MODEL_FIELDS, QUESTION_TASKS, TASKS, ConfigError, TrainConfig, checked, task_weights

# --- distributed ----------------------------------------------------------------------------------------------


def init_distributed() -> tuple[int, int]:
    """(rank, world size): from torchrun's environment when present, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def average_gradients(model: torch.nn.Module, world: int) -> None:
    """Average gradients over ranks in one flat all_reduce (what DDP does, without its one-forward rule)."""
    if world == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def any_rank(flag: bool, world: int) -> bool:
    """True on every rank if it is true on one, so all ranks stop at the same step."""
    if world == 1:
        return flag
    tensor = torch.tensor([int(flag)])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def broadcast_parameters(model: torch.nn.Module, world: int) -> None:
    if world > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


# --- one step -------------------------------------------------------------------------------------------------


@contextmanager
def image_encoder_trained(model, trained: bool):
    """Within it, the forward passes build a graph into the image encoder only when `trained`."""
    encoder = model.transformer.image_encoder
    if trained:
        yield
        return
    was = [p.requires_grad for p in encoder.parameters()]
    encoder.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, requires_grad in zip(encoder.parameters(), was):
            parameter.requires_grad_(requires_grad)


def backward_task_losses(model, batches, weights: dict[str, float], cfg: TrainConfig) -> tuple[dict[str, float], int]:
    """Accumulate one step's gradient: the weighted mean of the task losses, one task at a time so that only one task's
    graph is in memory. `batches` gives each task's batch by the task's name. Returns each task's unweighted loss and
    the tokens that the step saw."""
    total_weight = sum(weights.values())
    losses, tokens = {}, 0
    for task, weight in weights.items():
        batch = getattr(batches, task)()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"), \
                image_encoder_trained(model, cfg.questions_train_image or task not in QUESTION_TASKS):
            loss = model(**batch).loss
        (loss * weight / total_weight).backward()  # unweighted: exactly the mean of the task losses
        losses[task] = loss.item()
        tokens += int(batch["attention_mask"].sum())
    return losses, tokens


# --- schedule and evaluation ------------------------------------------------------------------------------------


def learning_rate(step: int, cfg: TrainConfig, train_seconds: float = 0.0) -> float:
    """Warmup, then cosine decay over whichever budget runs out first: `steps`, or `max_minutes` of training."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.max_minutes:
        progress = max(progress, train_seconds / (cfg.max_minutes * 60))
    progress = min(1.0, progress)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices only: decaying norms, biases and embeddings' tied twin just fights the loss.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def quick_eval(model, processor, cfg: TrainConfig, validation_text: str) -> dict:
    from ..data import scene_dataset, speech_dataset
    from ..evaluate import caption_scores, text_nats_per_char, transcription_scores

    model.eval()
    result = {
        "text_nats_per_char": text_nats_per_char(model, processor, validation_text, cfg.eval_text_windows,
                                                 cfg.eval_text_block),
        "caption_exact_match": caption_scores(model, processor, scene_dataset("validation", cfg.eval_scenes, 7),
                                              batch=32)["exact_match"],
        "wer": transcription_scores(model, processor, speech_dataset(
            "validation", cfg.eval_utterances, 7, cfg.speech_cache_dir), batch=32)["wer"],
        "question_accuracy": typed_question_accuracy(model, processor, cfg.eval_questions,
                                                     named=cfg.named_answers),
    }
    model.train()
    return result


def typed_question_accuracy(model, processor, n: int, seed: int = 7, named: bool = False) -> float:
    """% of greedy answers that are right, one typed question each about `n` validation scenes; with `named`, an
    answer must also name its object as the warm-up teaches (`named_answer`)."""
    from ..data import scene_dataset
    from ..data.questions import answer_is_right, ask_about, named_answer
    from ..evaluate import ANSWER_TOKENS, greedy_texts

    rng = random.Random(seed)
    scenes = scene_dataset("validation", n, seed)
    talk = [ask_about(scene, rng) for scene in scenes]
    inputs = processor(images=[s.image for s in scenes], text=[qa.question for qa in talk], task="ask")
    answers = greedy_texts(model, processor, [inputs], max_new_tokens=ANSWER_TOKENS)
    truths = [named_answer(qa) if named else qa.answer for qa in talk]
    return 100.0 * float(np.mean([answer_is_right(a, truth) for a, truth in zip(answers, truths)]))


def plot_history(history: list[dict], evals: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [h["step"] for h in history]
    for task in [t for t in TASKS if any(t in h for h in history)]:
        ax_loss.plot(steps, [h.get(task, math.nan) for h in history], label=task, linewidth=0.8)
    ax_loss.set(xlabel="step", ylabel="training loss (nats/token)", yscale="log", title="training loss")
    ax_loss.legend()
    if evals:
        eval_steps = [e["step"] for e in evals]
        ax_eval.plot(eval_steps, [e["text_nats_per_char"] for e in evals], "o-", label="text nats/char")
        ax_twin = ax_eval.twinx()
        ax_twin.plot(eval_steps, [e["caption_exact_match"] for e in evals], "s-", color="C1", label="caption EM %")
        ax_twin.plot(eval_steps, [e["wer"] for e in evals], "^-", color="C2", label="WER %")
        ax_twin.plot(eval_steps, [e.get("question_accuracy", math.nan) for e in evals], "d-", color="C3",
                     label="questions %")
        ax_twin.set(ylabel="%", ylim=(0, 100))
        ax_twin.legend(loc="upper right")
    ax_eval.set(xlabel="step", ylabel="nats/char", title="validation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- the loop -----------------------------------------------------------------------------------------------------


def _model_as_checkpointed(cfg: TrainConfig, state: dict, log) -> TrainConfig:
    """`cfg` with the model's settings as the checkpoint a run resumes from has them: the model is loaded from it,
    so a resume's --image-size or --n-layer changes nothing, and the card must not say it did."""
    in_force = (state.get("resumes") or [state])[-1]["config"]
    kept = {name: in_force[name] for name in MODEL_FIELDS if name in in_force and in_force[name] != getattr(cfg, name)}
    for name, value in kept.items():
        log(f"{name} stays {value!r}, the checkpoint's model (not {getattr(cfg, name)!r})")
    return dataclasses.replace(cfg, **kept)


def train(cfg: TrainConfig) -> Path:
    from tqdm import tqdm

    from ..data import load_shakespeare, split_text

    cfg = checked(cfg)
    weights = task_weights(cfg)
    rank, world = init_distributed()
    is_main = rank == 0
    log = print if is_main else (lambda *a, **k: None)
    out = Path(cfg.out_dir)
    checkpoint = out / "checkpoint"
    random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank; data seeds differ below

    train_text, validation_text = split_text(load_shakespeare(cfg.text_path))
    recover_checkpoint(checkpoint)
    resuming = (checkpoint / TRAINING_STATE).exists()
    if resuming:
        model = MMGPTForCausalLM.from_pretrained(checkpoint)
        processor = MMGPTProcessor.from_pretrained(checkpoint)
        state = torch.load(checkpoint / TRAINING_STATE, weights_only=False)
        log(f"resuming from step {state['step']} ({state['train_seconds'] / 60:.1f} min trained)"
            + (f"; --init-from {cfg.init_from} is for a run's start" if cfg.init_from else ""))
        if state["step"] >= cfg.steps:
            raise ConfigError(f"{checkpoint} is at step {state['step']} and steps is {cfg.steps}: raise --steps to "
                              "train further")
        cfg = _model_as_checkpointed(cfg, state, log)
        # A resume may change batch sizes or the schedule; keep every setting that was ever in force.
        state.setdefault("resumes", []).append({"step": state["step"], "config": dataclasses.asdict(cfg)})
    elif cfg.init_from:
        model, processor = warm_start(cfg.init_from, image_stem_blocks=cfg.image_stem_blocks, image_size=cfg.image_size,
                                      audio_layers=cfg.audio_layers, image_layers=cfg.image_layers,
                                      image_stem_layers=cfg.image_stem_layers, n_layer=cfg.n_layer)
        log(f"starting from the weights of {cfg.init_from}")
        state = {"step": 0, "train_seconds": 0.0, "history": [], "evals": [], "config": dataclasses.asdict(cfg)}
    else:
        model, processor = fresh_model(cfg, train_text)
        state = {"step": 0, "train_seconds": 0.0, "history": [], "evals": [], "config": dataclasses.asdict(cfg)}
    # The checkpoint says whether its answers describe the picture first, and how the description ends.
    processor.answer_after = answer_after(cfg.describe_first or cfg.relation_reasoning)
    processor.transcribes_spoken_questions = cfg.transcribe_spoken_questions
    broadcast_parameters(model, world)
    model.train()
    optimizer = make_optimizer(model, cfg)
    if resuming:
        optimizer.load_state_dict(state["optimizer"])
        optimizer.param_groups[0]["weight_decay"] = cfg.weight_decay  # the saved groups carry the old setting
    if is_main:  # before the pools: an out_dir that cannot be made fails in seconds, not minutes
        out.mkdir(parents=True, exist_ok=True)
    batches = TaskBatches(cfg, processor, train_text, seed=cfg.seed * 1000 + rank + 7919 * state["step"],
                          pool_seed=cfg.seed * 1000 + rank, log=log)
    log(f"mmgpt: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {world} process(es)")

    saved_at = state["step"]

    def checkpoint_now():
        nonlocal saved_at
        saved_at = state["step"]
        if is_main:
            slim = {k: v for k, v in state.items() if k != "optimizer"}
            save_checkpoint(checkpoint, model, processor, optimizer, slim)
            (out / "history.json").write_text(json.dumps({"history": state["history"], "evals": state["evals"]}))
            plot_history(state["history"], state["evals"], out / "loss.png")
        if world > 1:
            dist.barrier()

    progress = tqdm(range(state["step"], cfg.steps), initial=state["step"], total=cfg.steps, disable=not is_main,
                    mininterval=5.0)
    try:
        for step in progress:
            started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, cfg, state["train_seconds"])
            losses, tokens = backward_task_losses(model, batches, weights, cfg)
            average_gradients(model, world)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            state["train_seconds"] += seconds
            state["step"] = step + 1
            state["history"].append({"step": step + 1, **losses})
            progress.set_postfix(**{task: f"{loss:.2f}" for task, loss in losses.items()},
                                 tok_s=f"{tokens * world / seconds:.0f}")
            out_of_time = any_rank(bool(cfg.max_minutes) and state["train_seconds"] >= cfg.max_minutes * 60, world)
            if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps or out_of_time:
                if is_main:
                    scores = quick_eval(model, processor, cfg, validation_text)
                    state["evals"].append({"step": state["step"], "minutes": state["train_seconds"] / 60, **scores})
                    log(f"\nstep {state['step']}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
                checkpoint_now()
            if out_of_time:
                log(f"stopping: {cfg.max_minutes} training minutes used")
                break
    except KeyboardInterrupt:  # Ctrl-C: keep the steps made since the last checkpoint
        if world == 1 and state["step"] > saved_at:
            log(f"\ninterrupted: saving step {state['step']}; the same command resumes from it")
            checkpoint_now()
        raise
    if world > 1:
        dist.destroy_process_group()
    return checkpoint

"""Train mmgpt from scratch on scenes, speech and Tiny Shakespeare: the reference articles' recipe, made real.

Every optimizer step sees one sub-batch per task (continue text, caption, transcribe, answer a typed question about
a picture, answer a spoken question about a picture: image, audio and text in one sequence; `--tasks` may leave some
out), and takes the mean of their losses (`--task-weights` weighs it). A run starts from scratch, or from an earlier
checkpoint with `--init-from` (v4 starts from v3). Runs as one process, or data-parallel under
`torchrun --nproc_per_node N -m mmgpt train ...` (gloo on CPU, nccl on GPUs): each rank draws its own data and the
gradients are averaged with all_reduce.

By concern: `config` (the run's settings), `batches` (what a step sees), `checkpoints` (where weights come from and
go, and the mean of a lineage's checkpoints, `python -m mmgpt average`) and `loop` (the steps, the schedule and the
quick validation).
"""

from .batches import (TaskBatches, colour_token_ids, pad_right, pad_segments, spoken_question_pool, swap_colour_words,
                      tokenizer_corpus, warp_frequencies)
from .checkpoints import (AverageError, add_stem_layer, average_checkpoints, fresh_model, grow_image_size,
                          recover_checkpoint, save_checkpoint, silence_new_blocks, warm_start)
from .config import (PRECISIONS, QUESTION_TASKS, TASKS, ConfigError, TrainConfig, checked, focus_shapes,
                     listed_names, resolved_precision, task_names, task_weights)
from .loop import (average_gradients, backward_task_losses, image_encoder_trained, learning_rate, make_optimizer,
                   train)

__all__ = [
    "PRECISIONS", "QUESTION_TASKS", "TASKS", "AverageError", "ConfigError", "TaskBatches", "TrainConfig",
    "add_stem_layer", "average_checkpoints", "average_gradients", "backward_task_losses", "checked", "colour_token_ids",
    "focus_shapes", "fresh_model", "grow_image_size", "image_encoder_trained", "learning_rate", "listed_names",
    "make_optimizer", "pad_right", "pad_segments", "recover_checkpoint", "resolved_precision", "save_checkpoint",
    "silence_new_blocks", "spoken_question_pool", "swap_colour_words", "task_names", "task_weights", "tokenizer_corpus",
    "train", "warm_start", "warp_frequencies",
]

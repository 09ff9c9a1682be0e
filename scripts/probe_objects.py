"""Linear probes of the image encoder: is an object's colour, shape, size and place in the patches under it?

For every object of scenes with 2 or 3 objects, the image encoder's output patches whose centres lie inside the
object's box are averaged, and one linear classifier per attribute is trained on training scenes and scored on
validation scenes. A figure near 100% says the attribute is there for the decoder to read; a question kind whose
answers still ignore the object named then fails in the decoder, not in seeing. Example (session 16, mmgpt-tiny
v4.10, two threads, half a minute):

    python scripts/probe_objects.py --model assets/mmgpt-tiny

| attribute | validation objects right, % |
|---|---|
| colour | 99.5 |
| size | 95.3 |
| place (3x3 cell of its centre) | 91.9 |
| shape | 71.7 |

Size and place are there (92-95%), yet v4.10 answers "the same question about two objects" right for both in
2.5% of size and position pairs (colour 57.5%, shape 47.5%), and 400 steps of size and position questions did not
move that, with the image encoder frozen or training (`scripts/ablate_questions.py`). What fails is reading the
named object's size or place in the decoder.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmgpt.data import scene_dataset  # noqa: E402
from mmgpt.data.scenes import COLOURS, SHAPES, SIZES, cell_of  # noqa: E402
from mmgpt.model import MMGPTForCausalLM, MMGPTProcessor  # noqa: E402

ATTRIBUTES = {"colour": lambda o: o.colour, "shape": lambda o: o.shape, "size": lambda o: o.size,
              "place": lambda o: cell_of(*o.centre)}


def object_features(model, processor, scenes) -> tuple[torch.Tensor, list]:
    """(N, D) patch means, one per object of the scenes with 2-3 objects, and those objects."""
    scenes = [s for s in scenes if len(s.objects) >= 2]
    grid, frame = model.config.image_size // model.config.patch_size, model.config.image_size
    pixels = torch.from_numpy(np.stack([processor.image_to_pixels(s.image) for s in scenes]))
    with torch.no_grad():
        patches = torch.cat([model.transformer.image_encoder(pixels[i:i + 100]) for i in range(0, len(pixels), 100)])
    rows, objects = [], []
    for scene, scene_patches in zip(scenes, patches):
        for obj in scene.objects:  # boxes are in the scene's frame, which the picture is resized to
            inside = [r * grid + c for r in range(grid) for c in range(grid)
                      if obj.box[0] <= (c + .5) * frame / grid <= obj.box[2]
                      and obj.box[1] <= (r + .5) * frame / grid <= obj.box[3]]
            if inside:
                rows.append(scene_patches[inside].mean(0))
                objects.append(obj)
    return torch.stack(rows), objects


def probe(train_x, train_y, val_x, val_y, classes: int, steps: int = 500) -> float:
    """Validation accuracy, %, of a linear classifier trained full-batch on standardized features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    head = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.Adam(head.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head((train_x - mean) / std), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return 100 * float((head((val_x - mean) / std).argmax(-1) == val_y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/mmgpt-tiny")
    parser.add_argument("--train-scenes", type=int, default=3000)
    parser.add_argument("--validation-scenes", type=int, default=800)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = MMGPTForCausalLM.from_pretrained(args.model).eval()
    processor = MMGPTProcessor.from_pretrained(args.model)
    train_x, train_objects = object_features(model, processor, scene_dataset("train", args.train_scenes, 21))
    val_x, val_objects = object_features(model, processor, scene_dataset("validation", args.validation_scenes, 22))
    values = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES),
              "place": sorted({cell_of(*o.centre) for o in train_objects + val_objects})}
    for name, attribute in ATTRIBUTES.items():
        index = values[name].index
        train_y = torch.tensor([index(attribute(o)) for o in train_objects])
        val_y = torch.tensor([index(attribute(o)) for o in val_objects])
        accuracy = probe(train_x, train_y, val_x, val_y, len(values[name]))
        print(f"{name}: {accuracy:.1f}% of {len(val_objects)} validation objects ({len(train_objects)} to train on)")


if __name__ == "__main__":
    main()

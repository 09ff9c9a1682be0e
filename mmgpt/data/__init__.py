"""Datasets made by the project: synthetic scenes, synthetic speech and the Tiny Shakespeare text corpus.

numpy and PIL only (no torch), so importing this is cheap; librosa and soundfile load on first synthesis.
"""

from mmgpt.data.scenes import (
    COLOURS, HELD_OUT_PAIRS, IMAGE_SIZE, POSITIONS, SCENE_SPLITS, SHAPES, SIZES, SPLITS, VOCABULARY_WORDS,
    ParsedCaption, Scene, SceneObject, caption_words, cell_of, example_captions, iter_captions, iter_scenes,
    make_scene, parse_caption, scene_dataset, split_seed,
)
from mmgpt.data.speech import (
    COMMANDS, TEST_VOICES, TRAIN_VOICES, Utterance, add_noise, measure_snr_db, speech_dataset, synthesize,
)
from mmgpt.data.text import load_shakespeare, split_text

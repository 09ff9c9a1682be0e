"""mmgpt: a multimodal GPT demo. Importing the package registers the mmgpt model with transformers."""

from . import model  # noqa: F401  (registration with the Auto classes happens on import)

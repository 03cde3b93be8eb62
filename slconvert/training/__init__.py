"""Training converted models: router warm-up, a retrieval curriculum, long-document training.

`recipe` validates the YAML recipe, `data` generates sequences deterministically, `losses` holds the
router objectives, `loop` runs it all through accelerate (one device or several).
"""

from .loop import Trainer, TrainingStopped, train
from .recipe import Recipe, load_recipe

__all__ = ["Trainer", "TrainingStopped", "train", "Recipe", "load_recipe"]

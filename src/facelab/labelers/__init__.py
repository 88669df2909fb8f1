"""Automatic labels for face orientation (head yaw) and light direction, from landmarks and shading.

Every labeler returns, per face, a class (``left``/``center``/``right``), a continuous value and a confidence
(:class:`~facelab.labelers.base.AutoLabel`); classes are named in IMAGE coordinates, not the subject's:

- orientation ``left``: the face points towards the left of the image (we see more of its image-right
  cheek); the value is the head yaw in degrees, positive when the face points towards the image's right;
- light ``left``: the light comes from the left of the image (the image-left side of the face is brighter);
  the value is the brightness gradient across the face's skin (the slope of the log luma from the image-left
  to the image-right side, per eye-to-mouth distance), positive when the image-right side is brighter.

A horizontally flipped image gets the mirrored class and the negated value, exactly (tested).
"""

from facelab.labelers import light, orientation  # noqa: F401  (register the labelers)
from facelab.labelers.base import LABELERS, AutoLabel, Labeler, create_labeler, flip_landmarks

__all__ = ["LABELERS", "AutoLabel", "Labeler", "create_labeler", "flip_landmarks"]

"""The service's response bodies (they are its OpenAPI schema too)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FaceResult(BaseModel):
    """One face: where it is and what the model says about it.

    ``box`` is (x, y, width, height) and ``landmarks`` five (x, y) points (left eye, right eye, nose, left and
    right mouth corner, left/right in the image), in pixels of the uploaded photo; both are None when the
    photo was taken as one aligned face. ``attributes`` holds P(1) of each binary label and the class
    probabilities of each categorical one; ``predicted`` the decisions (0/1 or the class name).
    """

    box: list[float] | None = None
    landmarks: list[list[float]] | None = None
    score: float | None = None
    attributes: dict[str, float | dict[str, float]]
    predicted: dict[str, int | str]

    @classmethod
    def from_prediction(cls, face: Any) -> FaceResult:
        return cls(box=face.box, landmarks=face.landmarks, score=face.score, attributes=face.probs,
                   predicted=face.predicted)


class PredictResponse(BaseModel):
    faces: list[FaceResult]
    faces_found: int = Field(description="faces the detector found (more than `faces` when capped by max_faces)")
    image: dict[str, int]
    note: str | None = None
    seconds: float
    model: str


class ModelInfo(BaseModel):
    model: str
    labels: list[str]
    classes: dict[str, list[str]]
    faces: str = Field(description="detect: faces are found and aligned; aligned: each photo is one aligned face")
    engine: str
    preprocessing: dict[str, Any]
    facelab_version: str
    limits: dict[str, Any]
    notes: list[str] = Field(default_factory=list, description="what to know about the model served, e.g. a run "
                             "served from checkpoints/last because it has no checkpoints/best")

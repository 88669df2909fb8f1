"""What the service accepts and how much it does at once."""

from __future__ import annotations

from pydantic import Field

from facelab.config import StrictConfig
from facelab.data.decode import MAX_PIXELS


class ServeConfig(StrictConfig):
    """Limits of ``facelab serve``; every one turns hostile or accidental input into a clear 4xx/503.

    Attributes:
        max_upload_bytes: a request body above this is refused (413) before it is parsed.
        max_pixels: an image whose header announces more pixels is refused (413) before it is decoded.
        max_concurrent: predictions running at once.
        max_queue: requests waiting for a prediction slot; one more gets 503 with Retry-After.
        max_faces: faces predicted per photo (the best-scored ones); the response says when there were more.
        read_timeout_s: a client that has not sent its whole body by then gets 408 (slow clients).
    """

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(MAX_PIXELS, ge=1, le=MAX_PIXELS)
    max_concurrent: int = Field(2, ge=1)
    max_queue: int = Field(8, ge=0)
    max_faces: int = Field(32, ge=1, le=1000)
    read_timeout_s: float = Field(30.0, gt=0)
    retry_after_s: int = Field(1, ge=1)

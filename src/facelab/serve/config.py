"""What the service accepts and how much it does at once."""

from __future__ import annotations

from pydantic import Field

from facelab.config import StrictConfig
from facelab.data.decode import MAX_PIXELS

#: the service's default pixel limit: above a phone's full-resolution photo (48-50 Mpx sensors write up to
#: 8192 x 6144 = 50.3 Mpx), well under the decoder's own 89.5 Mpx. The pixels of a large JPEG are decoded
#: reduced (a few Mpx); a PNG, WebP or TIFF is decoded whole, so this bounds what one prediction slot holds
#: (measured in docs/serve.md, "Memory")
SERVE_MAX_PIXELS = 52_000_000


class ServeConfig(StrictConfig):
    """Limits of ``facelab serve``; every one turns hostile or accidental input into a clear 4xx/503.

    Attributes:
        max_upload_bytes: a request body above this is refused (413) before it is parsed.
        max_pixels: an image whose header announces more pixels is refused (413) before it is decoded (default
            :data:`SERVE_MAX_PIXELS`, 52 Mpx; at most the decoder's 89.5 Mpx).
        max_concurrent: predictions running at once (each may hold one decoded photo; every engine and
            detector is safe at any number).
        max_queue: requests waiting for a prediction slot; one more gets 503 with Retry-After.
        max_faces: faces predicted per photo (the best-scored ones); the response says when there were more.
        read_timeout_s: a client that has not sent its whole body by then gets 408 (slow clients).
    """

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(SERVE_MAX_PIXELS, ge=1, le=MAX_PIXELS)
    max_concurrent: int = Field(2, ge=1)
    max_queue: int = Field(8, ge=0)
    max_faces: int = Field(32, ge=1, le=1000)
    read_timeout_s: float = Field(30.0, gt=0)
    retry_after_s: int = Field(1, ge=1)

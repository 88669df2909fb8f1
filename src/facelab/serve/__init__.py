"""``facelab serve``: a trained classifier behind a REST API and a web page, on any photo.

- :mod:`facelab.serve.config`: the service's limits (upload size, pixels, concurrency, faces per photo);
- :mod:`facelab.serve.guard`: ASGI middleware that refuses oversized and slow uploads before they are parsed;
- :mod:`facelab.serve.server`: binding, announcing and serving (one process or ``--workers``), with deadlines on
  every connection and JSON refusals at the protocol level (``facelab serve`` and ``facelab label review``);
- :mod:`facelab.serve.spec`: what ``facelab serve`` serves, as one value each worker process builds the app from;
- :mod:`facelab.serve.app`: the FastAPI app (``POST /v1/predict``, ``GET /v1/model``, ``GET /healthz``, the
  page at ``/``, OpenAPI at ``/docs`` served from local files);
- ``static/``: the page (no CDN: it works offline).

The service builds its preprocessing from the checkpoint through the same :class:`facelab.eval.photos.PhotoPredictor`
that ``facelab predict`` uses, so a photo gets the same answer from both.
"""

"""facelab: face-attribute datasets, classifiers, generative models and augmentation studies."""

import os as _os

__version__ = "0.1.0"

# facelab sends nothing anywhere, and neither may the libraries it runs: onnxruntime otherwise opens a telemetry
# database in the user's cache folder (~/.cache/Microsoft/DeveloperTools) as soon as it is imported. A value the
# user set wins.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

"""facelab: face-attribute datasets, classifiers, generative models and augmentation studies."""

__version__ = "0.1.0"

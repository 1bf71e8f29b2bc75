"""emodet: speech emotion recognition from a folder of recordings to a tiny ONNX model."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("emodet")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"

from .audio import load_audio  # noqa: E402
from .errors import AudioError, EmodetError, UsageError  # noqa: E402
from .features import compute_feature, get_feature, list_features, register_feature  # noqa: E402

__all__ = [
    "__version__", "load_audio", "AudioError", "EmodetError", "UsageError",
    "register_feature", "get_feature", "list_features", "compute_feature",
]

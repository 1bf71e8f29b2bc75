"""Build a feature cache: the original entry point, the same as ``emodet features ...``.

    python audio_features.py --data-root D --feature mfcc --cache-dir C
"""

import sys

from emodet.cli import main

if __name__ == "__main__":
    sys.exit(main(["features", *sys.argv[1:]]))

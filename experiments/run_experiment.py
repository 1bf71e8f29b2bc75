"""Train one experiment: the original entry point, the same as ``emodet train ...``.

    python experiments/run_experiment.py --config configs/resnet_mfcc.yaml --run-name resnet_mfcc_v1 --data-root D
"""

import sys

from emodet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

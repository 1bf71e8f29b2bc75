"""``emodet encoders fetch``: the offline pretrained encoder, from the package index, checked by its hash."""

from __future__ import annotations

from .common import EXIT_OK, examples


def add_encoders(sub) -> None:
    p = sub.add_parser("encoders", help="pretrained speech encoders: fetch the offline one",
                       description="Fetch the offline encoder (Smart Turn v3.2's Whisper-tiny encoder, 23 languages) "
                                   "from the pipecat-ai==1.14.0 wheel on the package index: only that wheel is "
                                   "downloaded (pipecat is not installed), the ONNX file's SHA-256 is checked, and the "
                                   "encoder is converted into emodet's encoder folder ($EMODET_HOME/encoders, default "
                                   "~/.cache/emodet/encoders). Any transformers checkpoint (wav2vec2, HuBERT, WavLM, "
                                   "data2vec-audio, Whisper) is used as it is: features.params.model=HUB_ID_OR_FOLDER. "
                                   "smart-turn-v3.2-stem (or -RxS, other ranks) is the offline encoder's input "
                                   "embedding alone, its convolutions factored: the edge student's front end; "
                                   "whisper-logmel its input, the 80-band log-mel frames (no weights), for model "
                                   "encoder_stem, which trains those convolutions.",
                       epilog=examples("emodet encoders fetch", "emodet encoders fetch --wheel pipecat_ai-1.14.0-py3-none-any.whl"))
    p.add_argument("action", choices=("fetch",), help="fetch: download, check and convert the offline encoder")
    p.add_argument("--wheel", metavar="FILE", help="a pipecat-ai 1.14.0 wheel downloaded elsewhere (no network needed)")
    p.add_argument("--force", action="store_true", help="fetch again even if it is there")
    p.set_defaults(func=cmd_encoders)


def cmd_encoders(args) -> int:
    from ..features.encoders import smart_turn

    folder = smart_turn.fetch_smart_turn(args.wheel, force=args.force)
    print(f"{smart_turn.NAME}: Whisper-tiny encoder (4 layers, 384 dims), SHA-256 {smart_turn.SHA256[:16]}... checked "
          f"-> {folder}")
    print(f"{smart_turn.STEM_NAME}: its input embedding alone, compressed (the edge student's front end, "
          "configs/edge_student.yaml), from the same weights; model encoder_stem trains it "
          "(configs/edge_stem_finetune.yaml)")
    return EXIT_OK

"""The torch-free core: audio loading and DSP, statistics, openSMILE calls, file listing, atomic
writes, errors and small text helpers. ``emodet.runtime``, ``emodet.serve`` and the data layer's
parsers build on it; nothing here imports torch (a test checks)."""

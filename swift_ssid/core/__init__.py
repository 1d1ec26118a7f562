"""Pure code: no torch, no transformers, no ms-swift.

The answer format and its parser, the canonical identifier form, the prompt, collections, the identifier
index and its build, queries, run files, metrics, JSONL I/O and the caption-derived identifier source.
Everything here imports in milliseconds; ``tests/test_layers.py`` keeps it that way.
"""

"""Constrained decoding: torch and transformers only, no ms-swift.

Identifier tokenisation in context, the flat-array token trie and its cache, and the logits processors.
"""

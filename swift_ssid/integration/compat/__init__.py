"""Patches of ms-swift's and evalscope's internals, one file each, naming the pinned version they patch.

Each is backed by a canary test in ``tests/test_compat.py`` that fails once the patch is no longer needed.
"""

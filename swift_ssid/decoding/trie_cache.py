"""The trie for an identifier index and a tokenizer: built once, cached next to the index."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from swift_ssid.core.answers import IDENTIFIER_PREFIX
from swift_ssid.decoding.tokenisation import End, tokenizer_fingerprint
from swift_ssid.decoding.trie import TRIE_FORMAT_VERSION, TokenTrie, build_identifier_trie

logger = logging.getLogger(__name__)
_MEMO: dict[tuple[str, str], TokenTrie] = {}


def trie_cache_key(identifiers: list[str], tokenizer: Any, prefix: str, end: str, eos_token_id: int | None) -> str:
    """Hash of everything the trie depends on: identifiers, tokenizer vocabulary, prefix, end mode, EOS."""
    h = hashlib.sha256()
    h.update(tokenizer_fingerprint(tokenizer)["hash"].encode())
    h.update(f"\0{TRIE_FORMAT_VERSION}\0{prefix}\0{end}\0{eos_token_id}\0".encode())
    for ident in identifiers:
        h.update(ident.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def trie_for_index(
    index_dir: str | Path,
    tokenizer: Any,
    *,
    end: End = "newline",
    prefix: str = IDENTIFIER_PREFIX,
    vocab_size: int | None = None,
    eos_token_id: int | None = None,
) -> TokenTrie:
    """Load the cached trie for ``index_dir`` and ``tokenizer``, building and saving it on first use.

    The cache file is ``<index_dir>/trie-<key>.npz`` where ``key`` hashes the identifiers, the
    tokenizer's vocabulary, the prefix, the end mode and the EOS id, so a changed index or another
    tokenizer never reuses a stale trie. Within one process the loaded trie is memoised.
    """
    from swift_ssid.core.index import IdentifierIndex

    index_dir = Path(index_dir)
    index = IdentifierIndex.load(index_dir)
    identifiers = index.identifiers()
    if not identifiers:
        raise ValueError(
            f"{index_dir}: the identifier index has no valid identifier; rebuild it (swift-ssid build-index)"
        )
    eos = tokenizer.eos_token_id if eos_token_id is None else int(eos_token_id)
    key = trie_cache_key(identifiers, tokenizer, prefix, end, eos)
    memo_key = (str(index_dir.resolve()), key)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    path = index_dir / f"trie-{key}.npz"
    trie = None
    if path.is_file():
        try:
            trie = TokenTrie.load(path, tokenizer=tokenizer, prefix=prefix)
        except Exception as e:  # noqa: BLE001  (derived data: any damage means rebuild, never fail retrieval)
            logger.warning("%s: damaged trie cache (%s: %s); rebuilding it", path, type(e).__name__, e)
    if trie is None:
        logger.info("building the identifier trie for %d identifiers -> %s", len(identifiers), path)
        trie = build_identifier_trie(
            tokenizer,
            identifiers,
            prefix=prefix,
            end=end,
            vocab_size=vocab_size,
            eos_token_id=eos,
            drop_unrepresentable=True,
        )
        try:
            trie.save(path)
        except OSError as e:  # a read-only index still works, just without the cache
            logger.warning("could not cache the trie at %s: %s", path, e)
    _report_dropped(trie, index, index_dir)
    _MEMO[memo_key] = trie
    return trie


def dropped_images(trie: TokenTrie, index: Any) -> dict[str, str]:
    """``{image: why}`` for the images whose identifier the trie left out (it cannot round-trip the tokenizer)."""
    dropped = (trie.header.extra.get("dropped") or {}) if trie.header is not None else {}
    return {image: f"{ident!r} {why}" for ident, why in dropped.items() for image in index.images_for(ident)}


def _report_dropped(trie: TokenTrie, index: Any, index_dir: Path) -> None:
    """Warn, naming the images, when identifiers were left out of the trie; retrieval never returns them."""
    images = dropped_images(trie, index)
    if images:
        shown = "; ".join(f"{image}: {why}" for image, why in list(images.items())[:10])
        logger.warning(
            "%s: %d image(s) left out of the trie, their identifiers cannot round-trip through this tokenizer "
            "(regenerate them or edit index.jsonl): %s%s",
            index_dir,
            len(images),
            shown,
            " ..." if len(images) > 10 else "",
        )

"""Statistics of GRACE's identifier kinds on the 1,000 Flickr30K test images' captions, with the Qwen2 tokenizer.

The captions are real (``../shared/data/flickr30k_karpathy_test_captions.txt``, 5 per image); the images are
1x1 placeholders (no kind here looks at pixels; ``structured`` needs real images and a real encoder, so it is left
out). Every image is a ``train`` image, so all 1,000 are indexed. Prints a Markdown table of the ``stats.json``
fields that explain the kinds and writes ``benchmarks/kind_stats.json``.

Run from the repository root:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/kind_stats.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO.parent / "shared" / "data" / "flickr30k_karpathy_test_captions.txt"
TOKENIZER = REPO / ".cache" / "assets" / "qwen2-tokenizer"
KINDS = ("numeric", "string", "semantic", "atomic", "caption-derived")
FIELDS = ("images", "distinct_ratio", "collision_groups", "tokens_mean", "tokens_max", "trie_nodes", "root_fanout",
          "max_fanout", "mean_fanout", "new_tokens")  # fmt: skip


def main() -> int:
    from PIL import Image

    lines = [line.strip() for line in CAPTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        rows = []
        for i in range(len(lines) // 5):
            Image.new("RGB", (1, 1)).save(root / "images" / f"{i:04d}.jpg")
            rows.append({"image": f"images/{i:04d}.jpg", "captions": lines[5 * i : 5 * i + 5], "split": "train"})
        collection = root / "collection.jsonl"
        collection.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        results = {}
        for kind in KINDS:
            out = root / kind
            cmd = [sys.executable, "-m", "swift_ssid.cli", "identifiers", kind, "--collection", str(collection)]
            subprocess.run([*cmd, "--out", str(out), "--tokenizer", str(TOKENIZER)], check=True, capture_output=True)
            results[kind] = json.loads((out / "stats.json").read_text())
    print("| kind | images | distinct ratio | collision groups | tokens/id mean | max | trie nodes | root fan-out "
          "| max fan-out | mean fan-out | new tokens |")  # fmt: skip
    print("| --- |" + " ---: |" * 10)
    table = {}
    for kind, s in results.items():
        t = s["tokens"]
        cells = [s["images"], s["distinct_ratio"], s["collision_groups"], t["tokens_per_identifier"]["mean"],
                 t["tokens_per_identifier"]["max"], t["trie_nodes"], t["trie_root_fanout"], t["trie_max_fanout"],
                 t["trie_mean_fanout"], t["new_tokens_added"]]  # fmt: skip
        table[kind] = dict(zip(FIELDS, cells, strict=True))
        print(f"| `{kind}` | " + " | ".join(str(c) for c in cells) + " |")
    (REPO / "benchmarks" / "kind_stats.json").write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

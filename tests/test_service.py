"""The search service without a model: request checks, batching, the image route's confinement, clip_benchmark output.

The app runs in-process (FastAPI's ``TestClient``) in front of a fake engine; the real server on a tiny model,
started as a process, is ``tests/test_serve.py``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from swift_ssid.core.index import IdentifierIndex, IndexEntry
from swift_ssid.core.runs import RunRow
from swift_ssid.service.app import MAX_BODY_BYTES, create_app
from swift_ssid.service.batching import Batcher
from swift_ssid.service.engine import Hit, SearchResult, hits_from_row
from swift_ssid.service.images import ImageStore

IDENTIFIERS = {"cat.jpg": "tabby cat - sofa", "dog.jpg": "dog - park", "dog2.jpg": "dog - park", "sub/car.png": "car"}

# Each bad request, the status it gets, and a word of its one-line message.
BAD_REQUESTS = [
    ("empty query", json.dumps({"query": "  "}).encode(), 422, "empty"),
    ("1 MB query", json.dumps({"query": "x" * 1_000_000}).encode(), 413, "bytes"),
    ("non-UTF-8 body", b'{"query": "caf\xe9"}', 400, "UTF-8"),
    ("not JSON", b"{query: cat}", 400, "not JSON"),
    ("JSON list", b'["a cat"]', 400, "not an object"),
    ("query not a string", json.dumps({"query": 3}).encode(), 422, "string"),
    ("no query", json.dumps({"k": 3}).encode(), 422, "missing field"),
    ("k of 0", json.dumps({"query": "a cat", "k": 0}).encode(), 422, "k must be"),
    ("k of 10,000", json.dumps({"query": "a cat", "k": 10_000}).encode(), 422, "k must be"),
    ("k a string", json.dumps({"query": "a cat", "k": "3"}).encode(), 422, "k must be"),
    ("k true", json.dumps({"query": "a cat", "k": True}).encode(), 422, "k must be"),
    ("unknown field", json.dumps({"query": "a cat", "top": 3}).encode(), 422, "unknown field"),
]
TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "%252e%252e%252fsecret.txt",
    "0%2F..%2F..%2Fsecret.txt",
    "-1",
    "4",  # one past the last image
    "99999999999999999999",
    "%D9%A3",  # an Arabic-Indic digit three: isdigit() but not ASCII
    "1e0",
]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, IdentifierIndex]:
    """Images under root/, a secret beside it, and an index naming the images (one through a symlink out)."""
    base = tmp_path_factory.mktemp("service")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    for name, colour in (("cat.jpg", "orange"), ("dog.jpg", "brown"), ("sub/car.png", "red")):
        Image.new("RGB", (64, 48), colour).save(root / name)
    (base / "secret.txt").write_text("top secret")
    Image.new("RGB", (8, 8), "blue").save(base / "outside.jpg")
    (root / "dog2.jpg").symlink_to(base / "outside.jpg")  # a link out of the collection: never served
    entries = [IndexEntry(image, identifier, "ok") for image, identifier in IDENTIFIERS.items()]
    return root, IdentifierIndex(entries)


class FakeEngine:
    """The engine's ``search(texts, k)``: every query ranks the index's images in order; ``boom`` fails."""

    def __init__(self, index: IdentifierIndex):
        self.index = index
        self.calls: list[int] = []

    def search(self, texts, k):
        self.calls.append(len(texts))
        if any("boom" in t for t in texts):
            raise RuntimeError("CUDA out of memory")
        time.sleep(0.05)
        images = [e.image for e in self.index.entries][:k]
        hits = [Hit(r, image, self.index.identifier_for(image), -r / 10, "why") for r, image in enumerate(images, 1)]
        return [SearchResult(t, k, hits, {"reason": "train+infer", "k": k}) for t in texts]


@pytest.fixture(scope="module")
def client(collection):
    root, index = collection
    engine = FakeEngine(index)
    batcher = Batcher(engine.search, max_batch_size=8, max_wait_s=0.05)
    info = {"model": "tiny", "adapters": ["ckpt-1"], "template": "ssid_qwen2_5", "index": {"images": 4, "kind": "ssid"}}
    with TestClient(create_app(batcher, ImageStore(index, root), info, default_k=2, max_k=50)) as c:
        c.engine = engine
        yield c
    batcher.close()


def test_search_answers_with_ranked_images_urls_index_and_setting(client):
    r = client.post("/search", json={"query": " a tabby cat ", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "a tabby cat" and body["k"] == 3
    assert [h["rank"] for h in body["results"]] == [1, 2, 3]
    assert body["results"][0] == {
        "rank": 1, "image": "cat.jpg", "identifier": "tabby cat - sofa", "score": -0.1, "reason": "why",
        "image_url": "/images/0",
    }  # fmt: skip
    assert body["index"] == {"images": 4, "kind": "ssid"} and body["setting"] == {"reason": "train+infer", "k": 3}
    assert body["model"] == {"model": "tiny", "adapters": ["ckpt-1"], "template": "ssid_qwen2_5"}
    assert client.post("/search", json={"query": "a cat"}).json()["k"] == 2  # the server's default K


@pytest.mark.parametrize(("body", "status", "word"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_a_bad_request_gets_a_4xx_with_one_line_and_the_server_keeps_serving(client, body, status, word):
    r = client.post("/search", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert word in message and "\n" not in message and len(message) < 300
    assert client.post("/search", json={"query": "a cat"}).status_code == 200


def test_a_body_declared_too_large_is_refused_before_it_is_read(client):
    r = client.post("/search", content=b"{}", headers={"Content-Length": str(MAX_BODY_BYTES + 1)})
    assert r.status_code == 413


def test_a_model_error_is_a_500_with_its_message_and_the_next_request_is_answered(client):
    r = client.post("/search", json={"query": "boom"})
    assert r.status_code == 500 and r.json() == {"error": "search failed: RuntimeError: CUDA out of memory"}
    assert client.post("/search", json={"query": "a cat"}).status_code == 200


def test_health_and_the_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["index"]["images"] == 4 and health["k"] == {"default": 2, "max": 50}
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "/search" in page.text
    assert '<meta name="viewport"' in page.text


def test_thumbnails_of_index_images_only(client):
    r = client.get("/images/0")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(__import__("io").BytesIO(r.content)).size == (64, 48)
    assert client.get("/images/3").status_code == 200  # sub/car.png, a PNG re-encoded
    assert client.get("/images/2").status_code == 404  # dog2.jpg: a symlink out of the root


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_url_reads_a_file_outside_the_index(client, path):
    r = client.get(f"/images/{path}")
    assert r.status_code == 404
    assert "top secret" not in r.text and r.headers["content-type"].startswith("application/json")


def test_the_store_resolves_only_index_positions_inside_the_root(collection, tmp_path):
    root, index = collection
    store = ImageStore(index, root)
    assert store.path("0") == (root / "cat.jpg").resolve() and store.url("sub/car.png") == "/images/3"
    assert store.url("../secret.txt") is None
    for key in ("..", "/etc/passwd", "0/../1", "2", "", " 1"):
        assert store.path(key) is None, key
    escaping = IdentifierIndex([IndexEntry("../secret.txt", "a", "ok"), IndexEntry(str(tmp_path), "b", "ok")])
    assert ImageStore(escaping, root).path("0") is None and ImageStore(escaping, root).path("1") is None


def test_concurrent_submissions_share_engine_calls():
    calls = []

    def search(texts, k):
        calls.append(len(texts))
        time.sleep(0.05)
        return [f"{t}@{k}" for t in texts]

    batcher = Batcher(search, max_batch_size=8, max_wait_s=0.05)
    results: dict[int, str] = {}

    def client(i: int) -> None:
        results[i] = batcher.submit(f"q{i}", 1 + i % 2).result(timeout=30)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {i: f"q{i}@{1 + i % 2}" for i in range(16)}
    assert sum(calls) == 16 and len(calls) < 16 and max(calls) <= 8


def test_hits_expand_shared_identifiers_in_beam_order():
    row = RunRow("q", "a dog", ["(search)"], ["dog - park", "cat"], [-1.0, -2.0], ["r1", None], ["d1", "d2", "c"])
    images = {"dog - park": ["d1", "d2"], "cat": ["c"]}.get
    assert hits_from_row(row, 2, images) == [
        Hit(1, "d1", "dog - park", -1.0, "r1"),
        Hit(2, "d2", "dog - park", -1.0, "r1"),
    ]
    assert hits_from_row(row, 5, images)[2] == Hit(3, "c", "cat", -2.0, None)


# ---------------------------------------------------------------- clip_benchmark result files


def _run_file(path: Path, setting: dict) -> Path:
    rows = [
        RunRow("q1", "a cat", ["cat.jpg"], ["cat"], [-1.0], [None], ["cat.jpg"], setting=setting),
        RunRow("q2", "a dog", ["dog.jpg"], ["cat", "dog"], [-1.0, -2.0], [None, None], ["cat.jpg", "dog.jpg"],
               setting=setting),
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("setting", "model", "pretrained"),
    [
        ({"reason": "train+infer", "k": 10}, "swift_ssid-ssid", "reason=train+infer k=10"),
        (
            {"kind": "dense", "encoder": "clip-vit-b32", "fingerprint": "abcdef0123456789", "k": 10},
            "clip-vit-b32",
            "abcdef012345",
        ),
    ],  # fmt: skip
    ids=["generative", "dense"],
)
def test_evaluate_writes_the_clip_benchmark_layout(tmp_path, capsys, setting, model, pretrained):
    from swift_ssid.cli.main import main

    run = _run_file(tmp_path / "flickr30k.jsonl", setting)
    out = tmp_path / "result.json"
    assert main(["evaluate", str(run), "--format", "clip_benchmark", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result == {
        "dataset": "flickr30k", "model": model, "pretrained": pretrained, "task": "zeroshot_retrieval",
        "metrics": {"image_retrieval_recall@1": 0.5, "image_retrieval_recall@5": 1.0,
                    "image_retrieval_recall@10": 1.0},
        "language": "en",
    }  # fmt: skip
    assert main(["evaluate", str(run), "--format", "clip_benchmark"]) == 2
    assert "needs --out" in capsys.readouterr().err


def test_clip_benchmark_build_merges_a_generative_row_with_a_clip_row(tmp_path):
    """``clip_benchmark build`` (its own ``main_build``, when clip_benchmark is importable) tables both rows."""
    import importlib.util

    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None:
        pytest.skip("clip_benchmark is not installed: pip install clip_benchmark==1.6.2 (--no-deps is enough)")
    from swift_ssid.cli.main import main

    ours = tmp_path / "ssid.json"
    assert main(["evaluate", str(_run_file(tmp_path / "flickr30k.jsonl", {"k": 10})), "--format", "clip_benchmark",
                 "--out", str(ours)]) == 0  # fmt: skip
    metrics = {"image_retrieval_recall@1": 0.58, "image_retrieval_recall@5": 0.83, "text_retrieval_recall@1": 0.78}
    clip = {"dataset": "flickr30k", "model": "ViT-B-32", "pretrained": "openai", "task": "zeroshot_retrieval",
            "metrics": metrics, "language": "en"}  # fmt: skip
    (tmp_path / "clip.json").write_text(json.dumps(clip))
    # clip_benchmark.cli imports open_clip and torch models at the top; run its main_build alone, as written there.
    source = Path(spec.submodule_search_locations[0], "cli.py").read_text()
    import ast
    import csv
    import os

    tree = ast.parse(source)
    build = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main_build")
    scope = {"json": json, "csv": csv, "os": os}
    exec(compile(ast.Module([build], []), "clip_benchmark/cli.py", "exec"), scope)
    csv_path = tmp_path / "benchmark.csv"
    scope["main_build"](SimpleNamespace(files=[str(ours), str(tmp_path / "clip.json")], output=str(csv_path)))
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["model_fullname"] for r in rows] == ["swift_ssid-ssid k=10", "ViT-B-32 openai"]
    assert [r["image_retrieval_recall@1"] for r in rows] == ["0.5", "0.58"]
    assert rows[0]["text_retrieval_recall@1"] == "" and {r["task"] for r in rows} == {"zeroshot_retrieval"}

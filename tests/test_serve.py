"""``swift-ssid serve`` as users run it: a process on a tiny model, queried over HTTP, stopped with Ctrl-C.

The tiny random Qwen2 text model and a caption-derived index over the bundled demo collection (12 images). The
answers must equal the rows ``swift-ssid retrieve`` writes for the same queries (and ``swift-ssid search``'s);
16 concurrent clients all get theirs; bad requests and path tricks are refused while the server keeps serving;
the search page works in headless Chromium at desktop and phone widths.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import swift_ssid
from swift_ssid.core.caption_identifiers import write_caption_results
from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import build_index
from swift_ssid.core.runs import read_run
from swift_ssid.testing.tiny_models import OFFLINE_ENV

pytestmark = pytest.mark.slow
DEMO = Path(swift_ssid.__file__).parent / "data" / "demo"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
K = 3
MODEL_FLAGS = [
    "--model_type",
    "qwen2",
    "--template",
    "ssid_qwen2_5",
    "--max-new-tokens",
    "40",
    "--torch-dtype",
    "float32",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    out = {**os.environ, **OFFLINE_ENV}
    for key in ("SSID_INDEX", "SSID_TARGET", "SSID_INFER_REASON"):
        out.pop(key, None)
    return out


def post(port: int, body: bytes | dict, timeout: float = 120) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/search", body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def get(port: int, raw_path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of ``..`` or ``%2F``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", raw_path)
    response = conn.getresponse()
    return response.status, response.read()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny model, the index, three queries (a demo caption of four images) and the running server."""
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    root = tmp_path_factory.mktemp("serve")
    items = load_collection(DEMO / "collection.jsonl")
    write_caption_results([(item.image, item.captions[0]) for item in items], root / "results.jsonl")
    build_index(root / "results.jsonl", root / "index", image_root=DEMO)
    model = build_tiny_qwen2_text(root / "model")
    queries = [{"query_id": f"q{i}", "query": item.captions[1], "gold_images": [item.image]} for i, item in
               enumerate(items[:3])]  # fmt: skip
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    port = free_port()
    command = [sys.executable, "-m", "swift_ssid.cli", "serve", "--model", str(model), *MODEL_FLAGS]
    command += ["--index", str(root / "index"), "--image-root", str(DEMO), "--k", str(K), "--port", str(port)]
    log = (root / "serve.log").open("w")
    server = subprocess.Popen(command, cwd=root, env=env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert server.poll() is None, (root / "serve.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if json.loads(r.read())["status"] == "ok":
                    break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("the server did not answer /health within 300 s")
    yield {"root": root, "model": model, "queries": queries, "port": port, "server": server}
    if server.poll() is None:
        server.kill()
        server.wait()
    log.close()


def cli(setup, command: str, *args: str) -> subprocess.Popen:
    """Start ``swift-ssid COMMAND`` on the test's model and index, output captured."""
    root = setup["root"]
    full = [sys.executable, "-m", "swift_ssid.cli", command, *args, "--model", str(setup["model"]), *MODEL_FLAGS]
    full += ["--index", str(root / "index"), "--k", str(K), "--batch-size", "1"]
    return subprocess.Popen(full, cwd=root, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def answers(setup) -> tuple[dict[str, object], list[dict]]:
    """``swift-ssid retrieve``'s run rows and ``swift-ssid search --json``'s answers for the queries (one per call).

    Both run at once (two model loads in parallel, beside the server's).
    """
    root = setup["root"]
    retrieve = cli(setup, "retrieve", "--queries", str(root / "queries.jsonl"), "--out", str(root / "run.jsonl"))
    search = cli(setup, "search", *[q["query"] for q in setup["queries"]], "--json")
    outputs = [process.communicate(timeout=600) for process in (retrieve, search)]
    for process, (_, err) in zip((retrieve, search), outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    searched = [json.loads(line) for line in outputs[1][0].splitlines() if line.startswith("{")]
    return {row.query: row for row in read_run(root / "run.jsonl")}, searched


@pytest.fixture(scope="module")
def retrieved(answers) -> dict[str, object]:
    return answers[0]


def check_answer(body: dict, row, exact: bool) -> None:
    assert [h["image"] for h in body["results"]] == row.images[:K]
    assert [h["identifier"] for h in body["results"]] == row.identifiers[:K]  # the demo index has no shared ids
    scores = [h["score"] for h in body["results"]]
    if exact:
        assert scores == row.scores[:K]
    else:  # another batch: other padding, the same beams
        assert scores == pytest.approx(row.scores[:K], abs=1e-4)
    assert body["setting"] == row.setting and body["k"] == K


def test_one_client_gets_what_retrieve_writes(setup, retrieved):
    for query in setup["queries"]:
        status, body = post(setup["port"], {"query": query["query"], "k": K})
        assert status == 200, body
        check_answer(body, retrieved[query["query"]], exact=True)
        assert all(h["image_url"].startswith("/images/") for h in body["results"])
        assert body["index"]["images"] == 12 and body["index"]["kind"] == "ssid"
        assert body["index"]["version"] == 1  # the index version run files record, not a checksum


def test_search_command_prints_the_same(answers):
    retrieved, searched = answers
    assert len(searched) == len(retrieved)
    for answer in searched:
        row = retrieved[answer["query"]]
        assert [(h["image"], h["identifier"], h["score"]) for h in answer["hits"]] == list(
            zip(row.images[:K], row.identifiers[:K], row.scores[:K], strict=True)
        )


def test_sixteen_concurrent_clients_are_all_answered_correctly_in_shared_batches(setup, retrieved):
    port = setup["port"]
    before = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())["batches"]
    texts = [q["query"] for q in setup["queries"]] * 6
    texts = texts[:16]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: post(port, {"query": t, "k": K}), texts))
    for text, (status, body) in zip(texts, answers, strict=True):
        assert status == 200, body
        assert body["query"] == text
        check_answer(body, retrieved[text], exact=False)
    after = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())["batches"]
    assert after["searches"] - before["searches"] == 16
    assert after["count"] - before["count"] < 16  # batched: fewer engine calls than clients
    assert after["largest"] > 1


def test_bad_requests_and_path_tricks_are_refused_and_the_server_keeps_serving(setup):
    port = setup["port"]
    bad = [
        (b'{"query": ""}', 422),
        (json.dumps({"query": "x" * 1_000_000}).encode(), 413),
        (b'{"query": "caf\xe9"}', 400),
        (b'{"query": ', 400),
        (b'{"query": "a cat", "k": 0}', 422),
        (b'{"query": "a cat", "k": 10000}', 422),
        (b'{"query": "a cat", "extra": 1}', 422),
    ]
    for body, status in bad:
        got, answer = post(port, body)
        assert got == status and "\n" not in answer["error"], (body[:40], got, answer)
    secret = setup["root"] / "results.jsonl"  # a readable file outside the image root
    for path in ["/images/../results.jsonl", "/images/..%2Fresults.jsonl", f"/images/{secret}",
                 f"/images/%2F{str(secret)[1:].replace('/', '%2F')}", "/images/12", "/images/0%2F..%2F1",
                 "/../../etc/passwd"]:  # fmt: skip
        status, data = get(port, path)
        assert status == 404 and b"identifier" not in data and b"root:" not in data, path
    status, data = get(port, "/images/0")
    assert status == 200 and data[:3] == b"\xff\xd8\xff"  # a JPEG thumbnail
    assert post(port, {"query": "a tabby cat"})[0] == 200


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not found: apt-get install -y chromium")
@pytest.mark.parametrize("width", [1280, 390])
def test_the_search_page_in_headless_chromium(setup, width, tmp_path):
    """Type a query (the page's ``?q=`` fills the box and submits the form), see the thumbnails load."""
    url = f"http://127.0.0.1:{setup['port']}/?q=a+tabby+cat+on+a+sofa"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},1100",
            "--virtual-time-budget=20000"]  # fmt: skip
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    body = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', re.search(r"<body[^>]*>", dom).group(0)))
    assert body.get("data-state") == "done", dom[-2000:]
    assert body["data-results"] == str(K) and body["data-images-ok"] == body["data-images-total"] == str(K)
    assert dom.count('class="hit"') == K and "12 images, 12 identifiers" in dom
    shot = Path(os.environ.get("SERVE_TEST_SCREENSHOTS", tmp_path)) / f"search-{width}.png"
    subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, timeout=180, check=True)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (width, 1100)
    assert len(image.getcolors(maxcolors=1_000_000)) > 2_000  # the photos rendered, not only flat CSS colours


def test_ctrl_c_stops_the_server_cleanly_and_frees_the_port(setup):
    server, port = setup["server"], setup["port"]
    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=60) in (0, 130)
    assert "stopped" in (setup["root"] / "serve.log").read_text()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # free again

"""`python cli.py serve` as a user starts it, in a process of its own on 127.0.0.1: predictions equal to `predict`'s for
the same files, a 4xx with its reason for every bad input (and the server answering on), a bounded load test, and the
page in a real headless browser. One server for the module: starting LitServe's processes takes 15-30 s here."""

import csv
import http.client
import io
import shutil
import sys
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.serve_load import free_port, load, multipart, post, post_images, start_server, stop_server, wait_until_healthy
from cli import main
from tests.conftest import TINY_MASK, save_image

pytestmark = pytest.mark.slow
LIMITS = ["--max_images", "4", "--max_request_mb", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Photos as people send them: JPEG, PNG with alpha, a palette, grayscale, other sizes than the network's."""
    folder = tmp_path_factory.mktemp("photos")
    return [save_image(folder / "a.jpg", 0, size=50), save_image(folder / "b.png", 6, size=40, mode="RGBA"),
            save_image(folder / "c.png", 6, size=33, mode="P"), save_image(folder / "d.jpg", 0, size=64, mode="L")]


@pytest.fixture(scope="module")
def server(tiny_mask_run, tmp_path_factory):
    port, log = free_port(), tmp_path_factory.mktemp("server") / "serve.log"
    process = start_server([*TINY_MASK, "--ckpt_path", str(tiny_mask_run / "checkpoints" / "last.ckpt"), *LIMITS], port,
                           cwd=log.parent, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url
    finally:
        stop_server(process)
        print(log.read_text()[-3000:])


def test_served_probabilities_are_those_predict_gives_for_the_same_files(server, photos, tiny_mask_run, tmp_path, monkeypatch):
    status, answer = post_images(server, [(p.name, p.read_bytes()) for p in photos])
    assert status == 200, answer
    served = {p["file"]: {t["class"]: t["probability"] for t in p["top"]} for p in answer["predictions"]}
    assert list(served) == [p.name for p in photos]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    predicted = main(["predict", *TINY_MASK, "--ckpt_path", str(tiny_mask_run / "checkpoints" / "last.ckpt"),
                      "--data.predict_dir", str(photos[0].parent), "--predictions.output", "out.csv"])
    data, model = predicted.datamodule, predicted.model.eval()
    with torch.no_grad():  # what predict_step computed for the folder's files
        expected = model(data.transforms(data.predict_set.images.float() / 255)).softmax(dim=1).numpy()
    rows = {row["image"].rsplit("/", 1)[-1]: row for row in csv.DictReader(open("out.csv"))}
    for path, probabilities in zip(data.predict_paths, expected):
        name = path.rsplit("/", 1)[-1]
        got = np.array([served[name][c] for c in data.class_names])
        assert np.abs(got - probabilities).max() <= 1e-5, name
        assert max(served[name], key=served[name].get) == rows[name]["predicted"]


def bomb() -> bytes:
    """A PNG of few bytes whose pixels outnumber PIL's decompression-bomb limit."""
    buffer = io.BytesIO()
    Image.new("1", (10_000, Image.MAX_IMAGE_PIXELS // 10_000 + 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_bad_input_gets_its_4xx_and_the_server_answers_on(server, photos):
    good = [(photos[0].name, photos[0].read_bytes())]
    jpeg = photos[0].read_bytes()
    big, big_type = multipart([("big.jpg", b"\xff" * (4 << 20))])  # 4 MiB, the limit is 1
    chunked = ((big[i : i + 65536] for i in range(0, len(big), 65536)), big_type)  # no Content-Length: chunked
    bad = {  # what is sent: (status, words of the answer)
        "not an image": (multipart([("notes.txt", b"just text")]), 400, "notes.txt: not an image"),
        "truncated": (multipart([("half.jpg", jpeg[: len(jpeg) // 2])]), 400, "half.jpg: corrupt or truncated"),
        "zero bytes": (multipart([("empty.jpg", b"")]), 400, "empty.jpg: empty file"),
        "bomb": (multipart([("bomb.png", bomb())]), 400, "bomb.png: too large to decode safely"),
        "over the size limit": ((big, big_type), 413, "over this server's limit of 1 MiB"),
        "over the size limit, chunked": (chunked, 413, "over this server's limit of 1 MiB"),
        "too many images": (multipart(good * 5), 413, "5 images in one request; this server takes up to 4"),
        "another field": (multipart(good, field="image"), 400, "no images in the request"),
        "not multipart": ((b'{"files": []}', "application/json"), 415, "multipart/form-data"),
        "malformed multipart": ((b"garbage", "multipart/form-data; boundary=x"), 400, ""),
    }
    for case, ((body, content_type), status, words) in bad.items():
        got, answer = post(f"{server}/predict", body, content_type)
        assert (got, words in answer.get("detail", "")) == (status, True), (case, answer)
        assert post_images(server, good)[0] == 200, f"no answer after {case}"
    for _ in range(10):  # the server closes the connection once it has answered: each time, the 413 must be read first
        assert post(f"{server}/predict", big, big_type)[0] == 413
    with urllib.request.urlopen(f"{server}/health") as health:
        assert health.status == 200


def test_an_upload_over_the_limit_that_waits_for_100_continue_is_refused_before_it_sends(server):
    connection = http.client.HTTPConnection(*server.removeprefix("http://").split(":"), timeout=5)
    connection.putrequest("POST", "/predict")  # as curl -F sends a large file: the body follows a "100 Continue" only
    for name, value in (("Content-Type", "multipart/form-data; boundary=x"), ("Content-Length", str(4 << 20)),
                        ("Expect", "100-continue")):
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    assert (response.status, b"over this server's limit of 1 MiB" in response.read()) == (413, True)


def test_eight_concurrent_clients_get_every_answer(server, photos, capsys):
    result = load(server, [(p.name, p.read_bytes()) for p in photos], clients=8, seconds=None, requests=200)
    with capsys.disabled():
        print(f"\n200 requests, 8 clients: {result['per_second']:.1f}/s, p50 {result['p50_ms']:.0f} ms, "
              f"p99 {result['p99_ms']:.0f} ms")
    assert (result["requests"], result["failed"]) == (200, 0), result["failures"]


def test_the_page_shows_a_photos_predicted_class_in_a_real_browser(server, photos, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("no chromium to drive: install Debian's (apt-get install chromium); .ci/run installs it")
    status, answer = post_images(server, [(photos[0].name, photos[0].read_bytes())])
    predicted = answer["predictions"][0]["top"][0]["class"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 900, "height": 600})
        page.goto(server)
        page.set_input_files("#files", str(photos[0]))
        card = page.locator(".card").first
        card.wait_for(timeout=30_000)
        assert card.locator(".name").inner_text() == photos[0].name
        assert card.locator(".row .class").first.inner_text() == predicted
        assert page.locator("script[src], link[href]").count() == 0  # nothing fetched from elsewhere
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()
    assert Image.open(tmp_path / "page.png").size == (900, 600)


def test_an_exported_file_serves_the_same_probabilities(server, photos, tiny_mask_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    onnx = tmp_path / "mask.onnx"
    main(["export", *TINY_MASK, "--ckpt_path", str(tiny_mask_run / "checkpoints" / "last.ckpt"), "--output", str(onnx)])
    port = free_port()
    # Only --config names the task: class names, input size and resize come from the file.
    exported = start_server(["--config", TINY_MASK[1], "--ckpt_path", str(onnx)], port, cwd=tmp_path, log=tmp_path / "log")
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", exported)
        files = [(p.name, p.read_bytes()) for p in photos]
        answers = [post_images(url, files)[1]["predictions"] for url in (server, f"http://127.0.0.1:{port}")]
    finally:
        stop_server(exported)
    for checkpoint, file in zip(*answers):
        assert [t["class"] for t in checkpoint["top"]] == [t["class"] for t in file["top"]]
        assert max(abs(a["probability"] - b["probability"]) for a, b in zip(checkpoint["top"], file["top"])) <= 1e-5

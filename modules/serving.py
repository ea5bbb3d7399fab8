"""The prediction server on LitServe: ``POST /predict`` (multipart images in the field ``files``), ``GET /health``, and
a page at ``/`` to drop photos on. Uploads are checked and decoded in the HTTP process, each request on its own, so a
bad file gets its 4xx and never fails the other requests batched with it; the inference worker batches the decoded
images of concurrent requests (``max_batch_size``, ``batch_timeout``) through one forward pass."""

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import litserve as ls
import numpy as np
import torch
from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modules.export import load_exported

PAGE = Path(__file__).with_name("page.html")
FIELD = "files"  # the multipart field that holds the images


@dataclass
class UploadRules:
    """What the HTTP process needs to turn a request into images: the data's file reader, and the limits."""

    reader: Callable[[bytes, str], torch.Tensor]
    max_images: int


async def read_uploads(request: Request) -> list[tuple[str, np.ndarray]]:
    """A request's images as (file name, uint8 image) pairs, read by the data's own reader; every bad input a 4xx
    whose message says what was wrong and what to send instead."""
    rules: UploadRules = request.app.state.uploads
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, f"POST /predict takes images as multipart/form-data in the field '{FIELD}' "
                           f"(curl -F {FIELD}=@photo.jpg URL/predict).")
    form = await request.form()  # a malformed body: Starlette answers 400 with the parser's reason
    try:
        return await read_images(form, rules)
    finally:
        await form.close()  # the uploads' temporary files, whatever the answer


async def read_images(form: FormData, rules: UploadRules) -> list[tuple[str, np.ndarray]]:
    """The form's images, each decoded off the event loop; the first bad one answers for the request."""
    files = [item for item in form.getlist(FIELD) if isinstance(item, UploadFile)]
    if not files:
        raise HTTPException(400, f"no images in the request: send them as files in the multipart field '{FIELD}'.")
    if len(files) > rules.max_images:
        raise HTTPException(413, f"{len(files)} images in one request; this server takes up to {rules.max_images} "
                           "(serve --max_images): send them in several requests.")
    images = []
    for i, upload in enumerate(files):
        name = upload.filename or f"image {i + 1}"
        data = await upload.read()
        try:
            image = await run_in_threadpool(rules.reader, data, name)
        except ValueError as exc:  # the data's own message: empty, not an image, truncated, too large to decode safely
            raise HTTPException(400, f"{exc} Send a JPEG, PNG or other image file.") from exc
        except Exception as exc:  # anything else PIL fails on, said the same way
            raise HTTPException(400, f"{name}: could not be read as an image ({type(exc).__name__}: {exc}).") from exc
        images.append((name, image.numpy()))
    return images


Uploads = Annotated[list, Depends(read_uploads)]  # LitServe hands decode_request what this dependency returns


class ClassifierAPI(ls.LitAPI):
    """The inference worker: an exported file (its path) or the checkpoint's packaged network, run on batches."""

    def __init__(self, source: str | torch.nn.Module, class_names: list[str], top_k: int, **batching: Any) -> None:
        super().__init__(**batching)
        self.source, self.class_names, self.top_k = source, list(class_names), min(top_k, len(class_names))

    def setup(self, device: str) -> None:
        if isinstance(self.source, str):
            self.run, _ = load_exported(self.source)
            return
        module = self.source.to(device).eval()

        def run(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(images).to(device)).cpu().numpy()

        self.run = run

    def decode_request(self, request: Uploads) -> list[tuple[str, np.ndarray]]:
        return request

    def batch(self, inputs: list[list[tuple[str, np.ndarray]]]) -> list[list[tuple[str, np.ndarray]]]:
        return inputs  # predict stacks every request's images into one batch

    def predict(self, requests: Any) -> Any:
        batched = self.max_batch_size > 1  # unbatched, LitServe hands over one request at a time
        requests = requests if batched else [requests]
        probabilities = self.run(np.stack([image for uploads in requests for _, image in uploads]))
        ends = np.cumsum([len(uploads) for uploads in requests])[:-1]
        answers = [list(zip([name for name, _ in uploads], rows)) for uploads, rows in zip(requests, np.split(probabilities, ends))]
        return answers if batched else answers[0]

    def encode_response(self, output: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
        predictions = []
        for name, row in output:
            best = np.argsort(-row, kind="stable")[: self.top_k]
            predictions.append({"file": name, "top": [{"class": self.class_names[i], "probability": float(row[i])} for i in best]})
        return {"predictions": predictions}


class Page:
    """``GET /``: the page to try the model on (LitServe answers "/" with a line of text otherwise)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.html = app, PAGE.read_text()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in ("/", "/index.html") and scope["method"] in ("GET", "HEAD"):
            await HTMLResponse(self.html)(scope, receive, send)
            return
        await self.app(scope, receive, send)


DRAIN_BYTES, DRAIN_SECONDS = 32 << 20, 10  # what a refused upload may still send, and for how long, before its 413


async def drain(receive: Receive) -> None:
    """Read and drop what a refused request is still sending (up to ``DRAIN_BYTES``, for up to ``DRAIN_SECONDS``)
    before answering: uvicorn closes a ``Connection: close`` request's socket as soon as the answer is sent, and a
    client still sending (urllib, the browser) then gets a broken pipe instead of the 413 that says why."""

    async def read() -> None:
        seen = 0
        while seen < DRAIN_BYTES:
            message = await receive()
            seen += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(read(), DRAIN_SECONDS)


class RequestLimit:
    """Requests to ``path`` over ``max_bytes``: 413 with the limit and the fix, before the body is parsed (by its
    Content-Length) or as it arrives (a chunked upload), instead of a server that reads whatever it is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int, path: str = "/predict") -> None:
        self.app, self.max_bytes, self.path = app, max_bytes, path

    def message(self, size: str) -> str:
        return (f"the request is {size}, over this server's limit of {self.max_bytes / 2**20:g} MiB: send fewer or smaller "
                "images per request, or start the server with a larger --max_request_mb.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0")
        length = int(length) if length.isdigit() else 0
        if length > self.max_bytes:
            # curl -F waits for "100 Continue", which uvicorn sends at the first read: it is answered before it sends
            if length <= DRAIN_BYTES and headers.get(b"expect", b"").lower() != b"100-continue":
                await drain(receive)
            await JSONResponse({"detail": self.message(f"{length / 2**20:.1f} MiB")}, 413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                if message.get("more_body"):
                    await drain(receive)
                raise HTTPException(413, detail=self.message("larger than that"))
            return message

        await self.app(scope, counted, send)


def serve(source: str | torch.nn.Module, facts: dict[str, Any], reader: Callable[[bytes, str], torch.Tensor], host: str,
          port: int, top_k: int, max_images: int, max_request_mb: float, max_batch_size: int, batch_timeout: float) -> None:
    """Start the server and block until Ctrl+C."""
    api = ClassifierAPI(source, facts["class_names"], top_k, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    shown = {key: facts[key] for key in ("class_names", "input_shape", "project_version") if key in facts}
    server = ls.LitServer(api, timeout=60, model_metadata=shown,
                          middlewares=[Page, (RequestLimit, {"max_bytes": int(max_request_mb * 2**20)})])
    server.app.state.uploads = UploadRules(reader, max_images)
    where = f"http://{'localhost' if host == '127.0.0.1' else host}:{port}"
    print(f"Serving {', '.join(facts['class_names'])} at {where}/ (the page), POST {where}/predict, GET {where}/health. "
          "Ctrl+C stops.", flush=True)
    server.run(host=host, port=port, generate_client_file=False, log_level="warning")

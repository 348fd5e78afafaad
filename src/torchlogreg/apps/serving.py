"""A web demo and HTTP API over a trained run: draw a digit, watch the model decide.

    torchlogreg serve RUN_DIR --port 8000        # then open http://127.0.0.1:8000/

Routes: ``GET /`` (the drawing page, all assets served from the package, no CDN),
``POST /api/predict`` (multipart field ``file``, or JSON ``{"pixels": HxW or H*W numbers}`` for
the run's input shape, 28x28 or 784 for MNIST: integers 0..255 or floats 0..1; all 0 or 1: fractions),
``GET /api/model`` (what a client needs: class names, ``input_shape``, decision rule, metrics,
preprocessing, limits; no paths or versions), ``GET /healthz`` (``HEAD`` too, like ``/``),
OpenAPI docs at ``/docs``. The model is loaded once at start (safetensors, no pickle) and only
read by requests.

Hostile input costs bounded memory and time, for every route and every client: the request line
and headers may take MAX_HEADER_BYTES (refused with 400 before more is buffered), at most
MAX_CONNECTIONS connections are served at once (503 beyond), the body is read as it streams in and
cut at MAX_UPLOAD_BYTES (chunked bodies too), images are refused above SERVE_IMAGE_PIXELS before
decoding, arrays whose headers declare more than one image's worth (`array_bytes`) before reading,
JSON bodies longer than one image's numbers (`json_bytes`) before parsing, and at
most MAX_ACTIVE_REQUESTS requests decode and classify at once, in worker threads, off the event
loop (which answers /healthz itself). A run whose input shape is over SERVE_MAX_PIXELS is
refused at start: the evidence maps of each answer grow with it.

The limits any web server of this package applies live in `weblimits` (uvicorn's settings, a body
cut at a limit, heavy work off the event loop a few at a time); this module adds what depends on
the run: its input shape bounds each JSON body, each array upload and each answer.
Errors are JSON ``{"error": ...}``: 413 for bodies over the limit, 415 for other content types,
422 for anything that is not a usable image or array; an unexpected exception is logged here
and answered 500 ``{"error": "internal error"}``, never with a traceback.
"""

import io
import logging
from pathlib import Path

import numpy as np
import torch

from ..base.exceptions import CheckpointError, InputError, require
from ..base.storage import json_safe
from ..core.model import decide
from ..data.digits import as_shape, box_for
from ..data.images import AS_IS, MAX_IMAGE_PIXELS, picture_pixels, read_image
from ..data.inputs import array_images, read_array
from ..data.readers import one_line
from ..runfolder.checkpoints import Run, load_run
from .weblimits import HeaderLimit, WorkLimit, media_type, read_body, server_options

STATIC = Path(__file__).resolve().parent / "static"
API_VERSION = "1"  # what /openapi.json reports: the API's version, not the package's
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # request body, counted as it streams in (chunked bodies too)
SERVE_IMAGE_PIXELS = 4_000_000  # a drawing or a photo of one digit needs far fewer
SERVE_ARRAY_BYTES = 8 * 1024 * 1024  # decoded size of an uploaded .npy/.npz, at most (see array_bytes)
MAX_FORM_FIELDS = 8  # multipart fields besides the file
JSON_BYTES_PER_PIXEL = 32  # "0.12345678901234567, " and nesting: a JSON image's longest pixel
SERVE_MAX_PIXELS = 128 * 128  # of a run's input shape: each answer carries 3 maps of this many numbers
logger = logging.getLogger(__name__)


def input_shape(run: Run) -> tuple[int, int]:
    """The (height, width) of the images `run` was trained on, from its model.json."""
    return as_shape(run.meta["input_shape"])


def array_bytes(shape: tuple[int, int]) -> int:
    """The most bytes an uploaded .npy/.npz may decode to: one image of `shape` as float64, with room
    for a few small arrays beside it; more is refused from the headers, before anything is read."""
    return min(SERVE_ARRAY_BYTES, 16 * shape[0] * shape[1] + 64 * 1024)


def json_bytes(shape: tuple[int, int]) -> int:
    """The most bytes a JSON body with one image of `shape` needs: a larger one cannot be an image,
    and is refused before it is parsed (parsing holds the interpreter for a while)."""
    return JSON_BYTES_PER_PIXEL * shape[0] * shape[1] + 4096


def check_servable(run: Run) -> None:
    """Refuse a run whose input shape would make every answer (three maps of its pixels) too large."""
    height, width = input_shape(run)
    if height * width > SERVE_MAX_PIXELS:
        raise CheckpointError(
            f"{run.path}: input_shape {height}x{width} is over what serve supports ({SERVE_MAX_PIXELS} "
            f"pixels, 128x128); predict and evaluate work on it"
        )


def explain(run: Run, image: np.ndarray, top_k: int = 3) -> dict:
    """Prediction for one float image of the run's input shape, with per-pixel evidence (weight x input)."""
    shape = input_shape(run)
    model = run.model
    x = torch.from_numpy(image.reshape(1, -1).astype(np.float32))
    with torch.no_grad():
        logits = model(x)
        probabilities = model.probabilities(logits)[0]
    names = run.class_names
    predicted = int(decide(logits, run.threshold)[0])
    order = torch.argsort(probabilities, descending=True).tolist()
    runner_up = next(i for i in order if i != predicted)
    weight = model.linear.weight.detach()
    pixels = x[0]

    def evidence(index: int) -> list[list[float]]:
        if model.binary:  # one logit: evidence for class 1 is +w*x, for class 0 it is -w*x
            row = weight[0] * (1 if index == 1 else -1)
        else:
            row = weight[index]
        return (row * pixels).reshape(shape).tolist()

    return {
        "label": names[predicted],
        "probability": float(probabilities[predicted]),
        "probabilities": {name: float(p) for name, p in zip(names, probabilities, strict=True)},
        "top_k": [{"label": names[i], "probability": float(probabilities[i])} for i in order[:top_k]],
        "image": image.reshape(shape).round(4).tolist(),
        "evidence": {"predicted": evidence(predicted), "runner_up": evidence(runner_up)},
        "runner_up": names[runner_up],
    }


def _display_name(filename: str | None) -> str:
    """An uploaded file's name for messages and its type: its last part, on one line, at most 80
    characters (cut at the front, so the suffix stays)."""
    name = Path(filename or "upload").name or "upload"
    name = name if name.isprintable() else repr(name)[1:-1]
    return name if len(name) <= 80 else "..." + name[-77:]


def image_from_upload(data: bytes, filename: str, shape: tuple[int, int], pictures: str) -> np.ndarray:
    """One image of `shape` from an uploaded picture (made by the run's rule `pictures`) or array
    (as it is)."""
    if not data:
        raise InputError(f"{filename}: the upload is empty")
    if filename.lower().endswith((".npy", ".npz")):
        rows = read_array(io.BytesIO(data), shape, name=filename, max_bytes=array_bytes(shape))
        return _first_image(rows, filename, shape)
    gray = read_image(io.BytesIO(data), max_pixels=min(SERVE_IMAGE_PIXELS, MAX_IMAGE_PIXELS), name=filename)
    try:
        return picture_pixels(gray, shape, pictures)
    except InputError as exc:
        raise InputError(f"{filename}: {exc}") from None


def _first_image(rows: np.ndarray, name: str, shape: tuple[int, int]) -> np.ndarray:
    """The single image of `shape` in `rows`; a request classifies one image."""
    if len(rows) != 1:
        raise InputError(f"{name}: send one image at a time, got {len(rows)}")
    return rows[0].reshape(shape)


def _check_pixel_lists(pixels, wanted: str) -> None:
    """Refuse anything but lists of JSON numbers, nested at most as (N, H, W); true and false are not
    pixels (NumPy would read them as 1 and 0), nor are null or strings."""
    level = [pixels]
    for _ in range(3):
        if not all(type(item) is list for item in level):
            break
        level = [value for item in level for value in item]
        if all(type(value) in (int, float) for value in level):
            return
    raise InputError(f'"pixels" must be {wanted} as JSON lists (true/false, null and strings are not pixels)')


def _image_from_json(body: bytes, shape: tuple[int, int]) -> np.ndarray:
    """The image in a JSON body {"pixels": HxW or H*W numbers}; integers read as 0..255, floats 0..1,
    and numbers all 0 or 1 as fractions (1: full intensity)."""
    import json

    wanted = f"a {shape[0]}x{shape[1]} (or {shape[0] * shape[1]}) array of numbers"
    try:
        payload = json.loads(body)
    except RecursionError:
        raise InputError("body nests too deeply to be an image") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise InputError(f"body is not valid JSON ({one_line(exc)})") from None
    pixels = payload.get("pixels") if isinstance(payload, dict) else None
    if pixels is None:
        raise InputError(f'JSON body needs "pixels": {wanted}')
    _check_pixel_lists(pixels, wanted)
    try:
        array = np.asarray(pixels)
    except (ValueError, OverflowError):  # rows of different lengths
        raise InputError(f'"pixels" must be {wanted}; its rows differ in length') from None
    if array.dtype == object:  # integers too large for any NumPy type
        raise InputError('"pixels" holds numbers far out of range (integers 0..255 or floats 0..1)')
    if array.dtype.kind in "iu" and array.size and array.min() >= 0 and array.max() <= 1:
        # only 0s and 1s: fractions, as in a CSV (0..255 pixels that never pass 1 are black); JSON
        # has no float spelling of its own (JavaScript writes 1.0 as 1)
        array = array.astype(np.float32)
    return _first_image(array_images(array, Path("pixels"), shape), "pixels", shape)


async def _upload_from_multipart(request, body: bytes) -> tuple[bytes, str] | None:
    """(data, file name) of the multipart field `file` in `body`; None when there is no such file."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay():
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=1, max_fields=MAX_FORM_FIELDS)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InputError(f"malformed multipart upload ({exc.message})") from None
    try:
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            return None
        return await upload.read(), _display_name(upload.filename)
    finally:
        await form.close()


def _answer_upload(run: Run, upload: tuple[bytes, str], shape: tuple[int, int]) -> dict:
    return explain(run, image_from_upload(*upload, shape, run.pictures))


def _answer_json(run: Run, body: bytes, shape: tuple[int, int]) -> dict:
    return explain(run, _image_from_json(body, shape))


def model_summary(run: Run, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> dict:
    """What a client needs to use the run: classes, input shape, decision rule, test metrics and
    how inputs are read; no paths, command line or library versions."""
    shape = input_shape(run)
    box = box_for(shape)
    pictures = (
        f"grayscale, resized to {shape[0]}x{shape[1]}, as they are"
        if run.pictures == AS_IS
        else f"grayscale, white ink on black, the digit fitted into {box[0]}x{box[1]} and centred by mass "
        f"in {shape[0]}x{shape[1]}"
    )
    binary = bool(run.meta.get("binary"))
    metrics = {
        split: {key: json_safe(values.get(key)) for key in ("accuracy", "loss", "n")}
        for split, values in run.metrics.items()
        if split in ("train", "val", "test") and isinstance(values, dict)
    }
    return {
        "dataset": Path(str(run.meta.get("dataset", ""))).name,  # a dataset folder's name, not its path
        "class_names": list(run.class_names),
        "input_shape": list(shape),
        "binary": binary,
        "threshold": run.threshold if binary else None,  # P(class 1) > threshold decides class 1
        "metrics": metrics,
        "pictures": run.pictures,
        "background": run.background,  # the training pictures': the drawing pad draws on it
        "preprocessing": (
            f"pictures: {pictures}; arrays: {shape[0]}x{shape[1]} or {shape[0] * shape[1]} values, "
            "integers 0..255 or floats 0..1"
        ),
        "limits": {
            "upload_bytes": max_upload_bytes,
            "json_bytes": min(max_upload_bytes, json_bytes(shape)),
            "image_pixels": min(SERVE_IMAGE_PIXELS, MAX_IMAGE_PIXELS),
            "array_bytes": array_bytes(shape),
        },
    }


def _json_error(status: int, message: str, close: bool = False):
    """A JSON error; `close`: the connection closes after it (a body left unread, whose rest the
    client may still be sending)."""
    from fastapi.responses import JSONResponse

    headers = {"connection": "close"} if close else None
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def _install_error_handlers(app) -> None:
    """Every error is JSON: bad input 422, 404/405 as they are, and a bug 500 without its traceback."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    error = _json_error

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError):
        return error(422, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # 404, 405: JSON like every other error
        return JSONResponse(
            status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        # a bug, not bad input: logged here with its traceback; the client learns nothing about the code
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, "internal error")


def create_app(run_dir: str | Path, max_upload_bytes: int = MAX_UPLOAD_BYTES, run: Run | None = None):
    """The FastAPI application serving the run in `run_dir` (`run`: that run already loaded and
    checked, so it is not read again)."""
    require("fastapi", "serve")
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    if run is None:
        run = load_run(run_dir)
        check_servable(run)
    run.model.requires_grad_(False)
    # the multipart parser logs each malformed body besides raising; the client gets a 422 line
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    summary = model_summary(run, max_upload_bytes)
    answer = Answerer(run, max_upload_bytes)
    app = FastAPI(
        title="torchlogreg", description="Logistic regression on MNIST-style digits", version=API_VERSION
    )
    app.add_middleware(HeaderLimit)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _install_error_handlers(app)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    @app.head("/healthz", include_in_schema=False)
    async def healthz() -> dict:  # async: answered on the event loop, never queued behind a thread
        return {"status": "ok"}

    @app.get("/api/model")
    def model_info() -> dict:
        return summary

    @app.post("/api/predict")
    async def predict(request: Request):
        """Classify an image upload (multipart field `file`) or a JSON {"pixels": HxW or H*W values}."""
        return await answer(request)

    return app


class Answerer:
    """POST /api/predict for one run: the body read within its limit (by content type), then decoded
    and classified in a worker thread, a few at a time (WorkLimit)."""

    def __init__(self, run: Run, max_upload_bytes: int):
        self.run, self.shape, self.work = run, input_shape(run), WorkLimit()
        self.upload_limit = max_upload_bytes
        self.json_limit = min(max_upload_bytes, json_bytes(self.shape))

    async def __call__(self, request):
        from fastapi.responses import JSONResponse
        from starlette.requests import ClientDisconnect

        content_type = media_type(request.headers.get("content-type", ""))
        multipart = content_type == "multipart/form-data"
        if not (multipart or content_type == "application/json"):
            wanted = "send multipart/form-data with a 'file', or application/json with 'pixels'"
            return _json_error(415, wanted)
        limit = self.upload_limit if multipart else self.json_limit
        try:
            body = await read_body(request, limit)
        except ClientDisconnect:
            return _json_error(400, "the client disconnected before sending the whole body")
        except TimeoutError:  # (the rest of the body unread: the connection closes)
            return _json_error(408, "the body did not arrive in time (see the security guide)", close=True)
        if body is None:
            return _json_error(413, f"upload is over the limit of {limit} bytes", close=True)
        if multipart:
            upload = await _upload_from_multipart(request, body)
            if upload is None:
                return _json_error(422, "multipart upload needs a file in the field 'file'")
            answer = await self.work.run(_answer_upload, self.run, upload, self.shape)
        else:
            answer = await self.work.run(_answer_json, self.run, body, self.shape)
        # a JSONResponse skips FastAPI's jsonable_encoder walk over the 3 x H*W numbers (40% of the time)
        return JSONResponse(answer)


RUN_ENV = "TORCHLOGREG_SERVE_RUN"


def app_from_environment():
    """The app for the run named by $TORCHLOGREG_SERVE_RUN (how uvicorn's worker processes get it)."""
    import os

    torch.set_num_threads(1)  # tiny products: threads cost more than they give
    return create_app(os.environ[RUN_ENV])


def serve(
    run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, run: Run | None = None
) -> None:
    """Run the server. The run is read and checked once here (`run`: already loaded from `run_dir`)
    and served by this process; with several `workers`, each worker process reads it once more."""
    require("uvicorn", "serve")
    import os

    import uvicorn

    run = run if run is not None else load_run(run_dir)
    check_servable(run)  # fail here, with a clear message, rather than in every worker
    options = {"host": host, "port": port, "log_level": "warning", **server_options()}
    if workers == 1:
        uvicorn.run(create_app(run_dir, run=run), **options)  # passes SIGINT or SIGTERM on once stopped
        return
    os.environ[RUN_ENV] = str(Path(run_dir).resolve())
    app = "torchlogreg.apps.serving:app_from_environment"
    config = uvicorn.Config(app, factory=True, workers=workers, **options)
    _run_workers(config)


def _run_workers(config) -> None:
    """Serve with uvicorn's supervisor of worker processes. It keeps the SIGINT or SIGTERM that stops
    it to itself (and leaves its handlers installed): here the handlers before are put back and the
    signal raised again once the workers have stopped, so the command reports it as it does with one."""
    import signal

    from uvicorn.supervisors import Multiprocess

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    stopped_by: list[int] = []
    for signum, method in ((signal.SIGINT, "handle_int"), (signal.SIGTERM, "handle_term")):
        setattr(supervisor, method, _noting(stopped_by, signum, getattr(supervisor, method)))
    try:
        supervisor.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for signum in stopped_by[:1]:
        signal.raise_signal(signum)


def _noting(stopped_by: list[int], signum: int, handle):
    """`handle`, which first notes `signum` in `stopped_by`."""

    def noted() -> None:
        stopped_by.append(signum)
        handle()

    return noted

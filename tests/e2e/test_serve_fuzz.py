"""Schema-driven fuzzing of the service: every operation of its OpenAPI schema (the prediction API and the label
review API, in one app), called over real HTTP on a real server with data generated from the schema, valid and
invalid (schemathesis on Hypothesis). No answer may be a 5xx, and every answer must be one the schema declares,
with the body and headers it declares (errors included: ``{"detail": ...}``, Retry-After on a 503).

The model is the session's tiny classifier and the review store has 24 faces; the number of examples is bounded
and the generation derandomized, so the run is the same every time and takes tens of seconds.
"""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error

from facelab.data.labels_file import LabelsFile
from facelab.data.store import Store
from facelab.deploy import load_engine
from facelab.eval.photos import PhotoPredictor
from facelab.serve.app import create_app
from facelab.serve.config import ServeConfig
from facelab.serve.review import ReviewSession
from tests.e2e.conftest import cli_json
from tests.e2e.test_serve import png
from tests.e2e.test_serve_http import running
from tests.fixtures.faces import blank, two_faces

EXAMPLES = 25  # per operation and mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


def _photos() -> st.SearchStrategy[bytes]:
    """Uploads worth fuzzing /v1/predict with: real images (a face, none, tiny, odd sizes), images cut short or
    with bytes flipped, and arbitrary bytes."""
    images = st.sampled_from([png(two_faces()), png(blank((1, 1))), png(blank((3, 200))), png(blank((64, 64)))])
    damaged = st.tuples(images, st.integers(8, 400), st.binary(max_size=16)).map(lambda t: t[0][:t[1]] + t[2])
    return st.one_of(images, damaged, st.binary(max_size=2048))


@pytest.fixture(scope="module")
def app(clf_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    cli_json("data", "prepare", "synthetic", "--out", root / "store", "--size", 32, "--workers", 1, "-o", "n=24",
             "-o", "landmarks=true")
    cli_json("label", "auto", root / "store", "--out", root / "labels.csv")
    shutil.copy(root / "labels.csv", root / "pristine.csv")
    store = Store.open(root / "store")
    review = ReviewSession(store, LabelsFile.read(root / "labels.csv", store=store))
    predictor = PhotoPredictor(load_engine(clf_run[0]), faces="detect")
    return create_app(predictor, ServeConfig(max_upload_bytes=1 << 20, max_faces=2), review=review)


@pytest.fixture(scope="module")
def base_url(app):
    with running(app, header_timeout_s=5, read_timeout_s=5) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def photo_uploads():
    """File fields (``format: binary``) drawn from :func:`_photos` while the module runs."""
    from schemathesis.specs.openapi import formats
    from schemathesis.transport.serialization import Binary

    before = formats.STRING_FORMATS.get("binary")
    schemathesis.openapi.format("binary", _photos().map(Binary))
    yield
    if before is not None:
        schemathesis.openapi.format("binary", before)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_answers_within_its_schema_and_never_5xx(app, base_url, photo_uploads, mode):
    spec = app.app.openapi()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7  # the prediction API and the review API
    failures: dict[str, str] = {}
    for operation in operations:
        passes = [{}]  # generated freely; then, where the operation takes a task, with a real one too
        params = spec["paths"][operation.path][operation.method.lower()].get("parameters", [])
        if mode is GenerationMode.POSITIVE and any(p["name"] == "task" and p["in"] == "query" for p in params):
            passes.append({"query": {"task": "orientation"}})
        for fixed in passes:
            try:
                _fuzz(operation.as_strategy(generation_mode=mode, **fixed), base_url)
            except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as e:  # every failing operation is reported, not just the first
                failures[f"{operation.label} {fixed}"] = str(e)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_review_decisions_and_undo_on_real_faces_stay_within_the_schema(app, base_url):
    """The review API's writing path (a real face and task, the decision then its undo, undo with nothing left),
    which free generation rarely reaches, checked by the same checks."""
    schema = schemathesis.openapi.from_dict(app.app.openapi())
    key = _first_key(base_url)
    decide = schema["/v1/review/decision"]["POST"]
    undo = schema["/v1/review/undo"]["POST"]
    for body in ({"key": key, "task": "orientation", "cls": "left"}, {"key": key, "task": "orientation", "cls": None},
                 {"key": key, "task": "orientation", "cls": "sideways"}):
        decide.Case(body=body).call_and_validate(base_url=base_url, checks=CHECKS)
    statuses = [undo.Case(query={"task": "orientation"}).call_and_validate(base_url=base_url, checks=CHECKS).status_code
                for _ in range(2)]
    assert statuses == [200, 409]  # the decision taken back, then nothing left to undo


def _first_key(base_url: str) -> str:
    import requests

    return requests.get(f"{base_url}/v1/review/next", params={"task": "orientation"}, timeout=30).json()["next"]["key"]


def _fuzz(strategy, base_url: str) -> None:
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=strategy)
    def call(case):
        case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)

    call()


def test_the_schema_declares_every_refusal_with_its_json_body(app):
    spec = app.app.openapi()
    operations = [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    assert {p for p, _, _ in operations} >= {"/v1/predict", "/v1/model", "/healthz", "/v1/review/next"}
    for path, method, op in operations:
        codes = set(op["responses"])
        assert "503" in codes and op["responses"]["503"]["headers"]["Retry-After"]["required"], (path, method)
        if method == "post":
            assert {"400", "408", "413"} <= codes, (path, method)
        for code, response in op["responses"].items():
            if code[0] in "45":
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    predict = spec["paths"]["/v1/predict"]["post"]
    assert {"415", "422"} <= set(predict["responses"])
    assert "file" in predict["requestBody"]["content"]["multipart/form-data"]["schema"]["required"]

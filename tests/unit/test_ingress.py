"""The ingress's request checks through FastAPI's TestClient, no Ray: each refusal carries the documented error body
and is given before any replica is called. What needs Serve itself (its proxy, replicas, batching, back-pressure) is
tests/integration/test_serve.py's."""
import base64
import json

import numpy as np
import pytest
from facegen.cluster.serving.app import model_info
from facegen.cluster.serving.batching import DrawRequest
from facegen.cluster.serving.ingress import Ingress
from facegen.core.methods import NAMES
from fastapi.testclient import TestClient

KEY = "unit-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 2 * 1024 * 1024


class Replica:
    """Stands in for a Serve handle: records every call; answers only what the test gave it an answer for."""

    def __init__(self, **answers):
        self.answers, self.calls = answers, []

    def __getattr__(self, name):
        async def remote(*args):
            self.calls.append((name, args))
            if name not in self.answers:
                raise AssertionError(f"the request reached a replica ({name}) that it should never have reached")
            return self.answers[name](*args)

        return type("Method", (), {"remote": staticmethod(remote)})


@pytest.fixture(scope="module")
def info():
    return model_info("tiny", {m: "fresh" for m in NAMES})


@pytest.fixture
def front(info):
    """(TestClient, the encoder stand-in, the generator stand-ins): the tiny service's ingress with an API key."""
    encoder = Replica()
    generators = {m: Replica(stats=lambda: {"max_batch_size": 1}) for m in NAMES}
    ingress = Ingress(encoder, generators, "tiny", MAX_BODY, info, keys=[KEY])
    with TestClient(ingress.asgi_app(), raise_server_exceptions=True) as client:
        yield client, encoder, generators


def post(client, path, body, headers=AUTH):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=data, headers={"Content-Type": "application/json", **headers})


def assert_error(r, status: int, code: str, *words: str):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"], error
    for word in words:
        assert word in error["message"], error["message"]


@pytest.mark.parametrize("body,status,code,words", [
    ({"method": "dreamidentity", "face_image": "!!!not base64", "prompt": "S*"}, 400, "invalid_image", ("base64",)),
    ({"method": "dreamidentity", "face_image": "", "prompt": "S*"}, 400, "invalid_image", ("empty",)),
    ({"method": "dreamidentity", "prompt": "a chef"}, 422, "validation", ("exactly one",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "identity_token": "x", "prompt": "S*"}, 422, "validation", ()),
    ({"method": "painting", "face_image": "AAAA", "prompt": "S*"}, 422, "validation", ("method",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "num_images": 9}, 422, "validation", ("num_images",)),
    # The values that no caller may ask (the CLI refuses the same ones: tests/unit/test_sampling.py).
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "steps": 0}, 422, "validation", ("steps",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "steps": 1001}, 422, "validation", ("steps",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "guidance_scale": -3}, 422, "validation", ("guidance",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "width": 300}, 422, "validation", ("width", "multiple")),
    # FLUX packs latents 2×2: FaceT5's sides are multiples of 16, a rule of the method, not of the schema.
    ({"method": "facet5", "face_image": "AAAA", "prompt": "a portrait", "width": 264}, 422, "validation", ("16",)),
    # Valid for any caller (the CLI takes --steps 500) but over this service's own cap (sampling.service.max_steps).
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "steps": 500}, 422, "validation",
     ("1..100", "sampling.service")),
    ({"method": "faceclip", "face_image": "AAAA", "prompt": "x", "width": 2048, "height": 2048, "steps": 100,
      "num_images": 4}, 422, "validation", ("megapixel-steps", "at most 220")),
    # few steps on a huge canvas: the decoding and encoding of 4 × 2048² images is work too (180 s on the tiny models)
    ({"method": "faceclip", "face_image": "AAAA", "prompt": "x", "width": 2048, "height": 2048, "steps": 3,
      "num_images": 4}, 422, "validation", ("megapixel-steps", "decoding")),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "a chef"}, 400, "bad_prompt", ("S*",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "surprise": 1}, 422, "validation", ("surprise",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "control": {"pose_image": "AAAA"}}, 422,
     "validation", ("control.",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "width": 256, "height": 256,
      "control": {"head_box": [200, 200, 100, 100]}}, 422, "validation", ("does not lie on the 256×256",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "control": {"head_box": [0, 0, 0, 100]}}, 422,
     "validation", ("positive",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*",
      "control": {"head_box": [0, 0, 64, 64], "control_image": "AAAA"}}, 422, "validation", ("not both",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*", "control": {"head_box": [0, 0, 64, 64], "scale": 9}},
     422, "validation", ("scale",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*",
      "control": {"head_box": [0, 0, 64, 64], "start": 0.8, "end": 0.2}}, 422, "validation", ("start < end",)),
    ({"method": "dreamidentity", "face_image": "AAAA", "prompt": "S*",
      "control": {"control_image": base64.b64encode(b"not a picture").decode()}}, 400, "invalid_image",
     ("control.control_image",)),
])
def test_a_bad_request_gets_its_documented_error_before_any_replica_works(front, body, status, code, words):
    client, encoder, generators = front
    assert_error(post(client, "/v1/generate", body), status, code, *words)
    assert encoder.calls == [] and all(g.calls == [] for g in generators.values())


def test_encode_takes_photos_only(front):
    client, encoder, _ = front
    assert_error(post(client, "/v1/encode", {"method": "faceclip", "identity_token": "x"}), 422, "validation", "face_image")
    assert encoder.calls == []


def test_a_method_this_service_does_not_serve_is_refused(info):
    ingress = Ingress(Replica(), {"faceclip": Replica()}, "tiny", MAX_BODY, {"faceclip": info["faceclip"]}, keys=[])
    with TestClient(ingress.asgi_app()) as client:
        r = post(client, "/v1/generate", {"method": "facet5", "face_image": "AAAA", "prompt": "a portrait"}, headers={})
        assert_error(r, 422, "validation", "not served here", "faceclip")
        assert client.get("/v1/models").json()["methods"] == ["faceclip"]


def test_keys_guard_every_route_but_the_health_check_and_the_page(front):
    client, _, _ = front
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        assert_error(post(client, "/v1/generate", {"method": "faceclip", "prompt": "x"}, headers=headers), 401, "unauthorized")
    for path in ("/v1/models", "/v1/stats", "/openapi.json", "/docs", "/redoc"):
        assert_error(client.get(path), 401, "unauthorized")
        assert client.get(path, headers=AUTH).status_code == 200, path
        assert client.get(path, headers={"X-API-Key": KEY}).status_code == 200, path
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "/v1/generate" in page.text and 'type="file"' in page.text
    assert all(f'value="{m}"' in page.text for m in NAMES)


def test_models_reports_each_method_and_the_service_caps(front):
    client, _, generators = front
    models = client.get("/v1/models", headers=AUTH).json()
    assert models["methods"] == list(NAMES) and models["preset"] == "tiny" and models["max_body_bytes"] == MAX_BODY
    di, fc, t5 = (models["models"][m] for m in ("dreamidentity", "faceclip", "facet5"))
    assert di["default_size"] == [256, 256] and (di["base_model"], di["encoder"]) == ("tiny:sd21", "fresh")
    assert fc["base_model"] == "tiny:sdxl" and fc["dtype"] == "auto"
    assert di["service_caps"] == {"max_steps": 100, "max_images": 4, "max_side": 2048, "min_side": 256}
    assert t5["base_model"] == "tiny:flux" and t5["default_size"][0] % 16 == 0
    stats = client.get("/v1/stats", headers=AUTH).json()
    assert set(stats) == set(NAMES) and all(g.calls == [("stats", ())] for g in generators.values())
    assert "prompt" in str(client.get("/openapi.json", headers=AUTH).json()["paths"]["/v1/generate"])


def test_body_size_and_media_type(front):
    client, encoder, _ = front
    big = b'{"method": "faceclip", "prompt": "x", "face_image": "' + b"A" * (3 * 1024 * 1024) + b'"}'
    assert_error(post(client, "/v1/generate", big), 413, "too_large")

    def chunks():  # no Content-Length: the cap must hold while the body streams in
        yield b'{"method": "faceclip", "prompt": "x", "face_image": "'
        for _ in range(48):
            yield b"A" * 65536
        yield b'"}'

    r = client.post("/v1/generate", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert_error(r, 413, "too_large")
    assert_error(post(client, "/v1/generate", b"{not json"), 422, "validation")
    r = client.post("/v1/generate", content=b'{"method": "faceclip"}', headers={**AUTH, "Content-Type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type")
    assert encoder.calls == []


def test_a_valid_request_goes_to_the_encoder_then_its_generator(front, info):
    """The request path when every check passes: the photo's bytes to the encoder, the identity token and the
    request's settings to the method's generator, the arrays back as a watermarked PNG with the seed asked for."""
    client, encoder, generators = front
    photo = b"\x89PNG not really a photo: the encoder stand-in does not read it"
    encoder.answers["encode"] = lambda method, images: {"identity_token": "tok", "faces": [{"score": 0.9}], "ms": 1.0,
                                                        "pose": None}
    side = info["faceclip"]["default_size"]
    generators["faceclip"].answers["generate"] = lambda draw: {
        "arrays": [np.zeros((side[1], side[0], 3), np.uint8)], "seed": draw.seed, "ms": 2.0, "batch_size": 1,
        "info": {"method": "faceclip"}}
    r = post(client, "/v1/generate", {"method": "faceclip", "face_image": base64.b64encode(photo).decode(),
                                      "prompt": "a knight", "seed": 7, "steps": 2})
    assert r.status_code == 200, r.text
    assert encoder.calls == [("encode", ("faceclip", [photo]))]
    (name, (draw,)), = generators["faceclip"].calls
    # A typed request, resolved once here: the steps asked for, the rest the method's defaults, no control.
    assert isinstance(draw, DrawRequest) and draw.identity_token == "tok" and draw.seed == 7
    assert draw.plan.steps == 2 and draw.plan.guidance_scale == info["faceclip"]["guidance_scale"]
    assert [draw.plan.width, draw.plan.height] == side and draw.plan.control is None
    assert r.json()["seed"] == 7 and r.json()["format"] == "png"
    assert base64.b64decode(r.json()["images"][0]).startswith(b"\x89PNG")


def body_request(chunks, headers=AUTH, pause_s=0.0, disconnect=False):
    """A starlette Request whose body arrives as `chunks`, `pause_s` apart; `disconnect`: the client then leaves."""
    import asyncio

    from starlette.requests import Request

    pending = list(chunks)

    async def receive():
        if pending:
            await asyncio.sleep(pause_s)
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or disconnect}
        if disconnect:
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)

    raw = [(k.lower().encode(), v.encode()) for k, v in {"content-type": "application/json", **headers}.items()]
    return Request({"type": "http", "method": "POST", "path": "/v1/encode", "headers": raw,
                    "client": ("198.51.100.7", 5000)}, receive)


def read(request, limits, slots=None):
    import asyncio

    from facegen.cluster.serving.api import EncodeRequest, read_body

    return asyncio.run(read_body(request, EncodeRequest, limits, slots))


def test_a_body_that_trickles_in_is_cut_with_a_408():
    """A byte every 0.3 s is below the pace the limits ask for once the grace period is over: 408, long before the
    total deadline; a body that keeps the pace is read."""
    import time

    from facegen.cluster.serving.api import ApiError, BodyLimits

    limits = BodyLimits(timeout_s=30, min_rate=100, grace_s=0.5)
    start = time.perf_counter()
    with pytest.raises(ApiError) as e:
        read(body_request([b"{"] * 50, pause_s=0.3), limits)
    assert e.value.status == 408 and e.value.code == "timeout" and time.perf_counter() - start < 2
    good = json.dumps({"method": "faceclip", "face_image": "aGk="}).encode()
    assert read(body_request([good[:10], good[10:]], pause_s=0.05), limits).method == "faceclip"
    with pytest.raises(ApiError) as e:  # the total deadline, whatever the pace
        read(body_request([b" " * 200] * 10, pause_s=0.3), BodyLimits(timeout_s=1.0, min_rate=1, grace_s=0.1))
    assert e.value.status == 408


def test_a_client_that_leaves_mid_body_is_a_499():
    from facegen.cluster.serving.api import ApiError, BodyLimits

    with pytest.raises(ApiError) as e:
        read(body_request([b'{"method": '], disconnect=True), BodyLimits())
    assert e.value.status == 499 and e.value.code == "client_closed"


def test_one_client_holds_at_most_its_body_slots():
    """Bodies being read are counted per client (its key): one past `per_client` is a 429 at once; another key, or
    the same one once a read ends, is served."""
    import asyncio

    from facegen.cluster.serving.api import ApiError, BodyLimits, BodySlots, EncodeRequest, read_body

    limits, slots = BodyLimits(per_client=2, grace_s=5, timeout_s=5), BodySlots()
    good = json.dumps({"method": "faceclip", "face_image": "aGk="}).encode()

    async def scenario():
        slow = [asyncio.create_task(read_body(body_request([good], pause_s=0.5), EncodeRequest, limits, slots))
                for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(ApiError) as e:
            await read_body(body_request([good]), EncodeRequest, limits, slots)
        other = await read_body(body_request([good], headers={"Authorization": "Bearer other"}), EncodeRequest,
                                limits, slots)
        done = await asyncio.gather(*slow)
        again = await read_body(body_request([good]), EncodeRequest, limits, slots)
        return e.value, other, done, again

    error, other, done, again = asyncio.run(scenario())
    assert error.status == 429 and error.code == "too_many_uploads"
    assert other.method == again.method == "faceclip" and len(done) == 2 and not slots.reading


def test_a_lost_face_encoder_is_not_sent_the_photos_again_but_a_lost_generator_is(front, info):
    """The photos may be what killed the face-encoder replica: that call is not replayed (503, once); a generate
    whose replica died is (it is seeded, its inputs already checked)."""
    from ray.exceptions import RayActorError

    client, encoder, generators = front

    def lost(*_):
        raise RayActorError()

    encoder.answers["encode"] = lost
    r = post(client, "/v1/encode", {"method": "faceclip", "face_image": base64.b64encode(b"x").decode()})
    assert_error(r, 503, "unavailable", "not sent again")
    assert len(encoder.calls) == 1
    side = info["faceclip"]["default_size"]
    answers = iter([lost, lambda draw: {"arrays": [np.zeros((side[1], side[0], 3), np.uint8)], "seed": draw.seed,
                                         "ms": 1.0, "batch_size": 1, "info": {"method": "faceclip"}}])
    generators["faceclip"].answers["generate"] = lambda draw: next(answers)(draw)
    from facegen.cluster.serving import tokens

    token = tokens.seal(tokens.token_keys(), "faceclip", "x", {"a": np.zeros(1, np.float32)})
    r = post(client, "/v1/generate", {"method": "faceclip", "identity_token": token, "prompt": "a chef", "seed": 1})
    assert r.status_code == 200, r.text
    assert [name for name, _ in generators["faceclip"].calls] == ["generate", "generate"]

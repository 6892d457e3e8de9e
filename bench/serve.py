"""Serving benchmark, measured in one run: the HTTP round trip of POST /v1/generate vs the same generation as a direct
pipeline call in this process (ratio), the throughput of 8 concurrent HTTP clients vs 1 (ratio), and the generator
replica's busy fraction under the 8-client load (seconds drawing ÷ wall seconds; each response reports its batch's
draw time and size, so Σ draw_ms / batch_size over responses is the replica's drawing time). On a GPU the absolute
times are printed with the device named.

    python bench/serve.py [--method dreamidentity|faceclip] [--preset tiny] [--requests 6] [--steps 10] [--size 256]
"""
import argparse
import base64
import json
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402
from facegen.cluster.demo import shipped_photos  # noqa: E402
from facegen.core.methods import NAMES, load_pipeline  # noqa: E402

PROMPTS = {"dreamidentity": "S* as a chef", "faceclip": "a chef in a kitchen"}


def direct_seconds(method: str, preset: str, photo: Path, args) -> float:
    """Median seconds of encode + generate with the pipeline in this process (what one HTTP request does). On a CPU
    with the replica's thread count: Ray runs an actor asking for under one CPU with one torch thread, and a direct
    call on every core would make the HTTP ratio measure threads, not the service."""
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    pipe = load_pipeline(method, preset)
    pipe.set_progress_bar_config(disable=True)
    times = []
    for i in range(args.requests + 1):
        start = time.perf_counter()
        identity = pipe.encode_identity(str(photo))
        pipe(PROMPTS[method], identity=identity, num_inference_steps=args.steps, width=args.size, height=args.size,
             generator=torch.Generator().manual_seed(i))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i:  # the first call warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def http_call(url: str, body: dict, seen: list | None = None) -> float:
    start = time.perf_counter()
    r = requests.post(url + "/v1/generate", data=json.dumps(body), headers={"Content-Type": "application/json"},
                      timeout=600)
    r.raise_for_status()
    if seen is not None:
        seen.append(r.json())
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default=NAMES[0], choices=NAMES)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--requests", type=int, default=6, help="requests per measurement")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--size", type=int, default=256, help="width = height (the service draws at least 256)")
    p.add_argument("--clients", type=int, default=8)
    args = p.parse_args()
    import importlib.util

    import ray
    from ray import serve

    spec = importlib.util.spec_from_file_location("serve_app", Path(__file__).resolve().parents[1] / "serve" / "app.py")
    serve_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_app)

    photo = shipped_photos()["astronaut"]
    body = {"method": args.method, "face_image": base64.b64encode(photo.read_bytes()).decode(),
            "prompt": PROMPTS[args.method], "steps": args.steps, "width": args.size, "height": args.size, "seed": 0}
    t_direct = direct_seconds(args.method, args.preset, photo, args)

    ray.init(logging_level="WARNING", num_gpus=torch.cuda.device_count() or None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(serve_app.deploy({"preset": args.preset, "methods": args.method}), name="facegen", route_prefix="/",
              blocking=False)
    url = f"http://127.0.0.1:{port}"
    try:
        http_call(url, body)  # warm-up: first request loads nothing new, but fills caches
        t_http = statistics.median(http_call(url, {**body, "seed": i}) for i in range(args.requests))
        start = time.perf_counter()
        for i in range(args.requests):
            http_call(url, {**body, "seed": i})
        one_client = args.requests / (time.perf_counter() - start)
        n, seen = args.requests * args.clients, []
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda i: http_call(url, {**body, "seed": i}, seen), range(n)))
        wall = time.perf_counter() - start
        many_clients = n / wall
        drawing = sum(r["timings_ms"]["generate"] / r["batch_size"] for r in seen) / 1000
        image_encode = [r["timings_ms"]["image_encode"] for r in seen if "image_encode" in r["timings_ms"]]
    finally:
        serve.shutdown()
        ray.shutdown()
    result = {"method": args.method, "preset": args.preset, "steps": args.steps, "size": args.size,
              "direct_s": round(t_direct, 3), "http_s": round(t_http, 3),
              "ratio_http_over_direct": round(t_http / t_direct, 2),
              "requests_per_s_1_client": round(one_client, 3), f"requests_per_s_{args.clients}_clients": round(many_clients, 3),
              f"ratio_{args.clients}_clients_over_1": round(many_clients / one_client, 2),
              f"generator_busy_fraction_{args.clients}_clients": round(drawing / wall, 3),
              "mean_batch_size": round(statistics.mean(r["batch_size"] for r in seen), 2)}
    if image_encode:
        result["image_encode_ms_median"] = round(statistics.median(image_encode), 1)
    record(f"serve_{args.method}", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

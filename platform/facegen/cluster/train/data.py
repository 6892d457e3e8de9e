"""Training rows from build_data's output, as one Ray Data dataset that Ray Train shards across workers.

Self-aug row (kept only): encoder input = source_face, target = edited_image, prompt = the S* prompt.
FFHQ row: input = the aligned face of the photo, target = the photo, prompt = its caption.
The two are mixed at `train.ffhq_ratio` by down-sampling the larger side; decoding (PNG → float arrays, the face at
the method's face-ViT size) runs on the Ray Data side, not in the training loop. The face_embedding of each source
face was stored by the data build, so training never runs the recognizer.

Order. With `train.materialize` (the decoded set fits the object store) the rows are produced in a fixed order and
`exact_split()` gives every worker the same rows in every run, so each worker's batches are a function of (seed,
epoch) alone — what makes a resumed run equal an uninterrupted one. Without it, Ray Train's streaming split hands
blocks to whichever worker asks first: a resumed run continues from the saved batch count with the same number of
rows per worker, but not necessarily the same rows.
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from facegen.cluster.data.schema import check_columns, decode_latents
from facegen.cluster.data.storage import Storage
from facegen.core.config import Preset
from facegen.core.errors import ConfigError

SELFAUG_NEEDS = ("source_face", "face_embedding", "prompt", "edited_image", "kept")
FFHQ_NEEDS = ("source_face", "face_embedding", "prompt", "target_image")


def _shards(storage: Storage, kind: str, needs) -> tuple[list[str], bool]:
    paths = storage.list(kind, suffixes=(".parquet",))
    if not paths:
        return [], False
    schema = pq.read_schema(paths[0], filesystem=storage.fs)
    check_columns(schema, needs, storage.uri_of(kind))
    return paths, "latents" in schema.names


def _rows(storage: Storage, paths: list[str]) -> int:
    return sum(pq.read_metadata(p, filesystem=storage.fs).num_rows for p in paths)


def decode_batch(batch: dict, resolution: int, face_size: int, vae_scale_factor: int) -> dict:
    """PNG bytes → face (3×S×S, S = the face ViT's input) and target (3×R×R) float32 in [-1, 1], the stored
    face_embedding as float32; cached latents when they fit R. A plain function: it holds no model, so Ray Data runs
    it as tasks on already-started workers instead of starting an actor for it."""
    import PIL.Image

    from facegen.core.face.images import decode_image

    r, s = resolution, face_size
    out = {"prompt": np.asarray(batch["prompt"], dtype=object)}
    out["face"] = np.stack([_to_unit(np.asarray(PIL.Image.fromarray(decode_image(b)).resize((s, s), PIL.Image.BICUBIC)))
                            for b in batch["source_face"]])
    out["face_embedding"] = np.stack([np.asarray(e, np.float32) for e in batch["face_embedding"]])
    out["target"] = np.stack([_to_unit(np.asarray(PIL.Image.fromarray(decode_image(b)).resize((r, r), PIL.Image.BICUBIC)))
                              for b in batch["target"]])
    if "latents" in batch:
        lat = [decode_latents(d, sh) if len(d) else None for d, sh in zip(batch["latents"], batch["latents_shape"])]
        if all(x is not None and x.shape[-1] == r // vae_scale_factor for x in lat):
            out["latents"] = np.stack(lat)
    return out


def _to_unit(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)


def check_training_data(uri: str) -> dict:
    """Fail with a clear error (before any worker starts) unless `uri` holds build_data shards with the columns
    training reads. Returns the shard lists and row counts."""
    storage = Storage.open(uri)
    if not storage.is_dir():
        raise ConfigError(f"--data {uri}: no such directory (give the --output of jobs/build_data.py)")
    selfaug, s_lat = _shards(storage, "selfaug", SELFAUG_NEEDS)
    ffhq, f_lat = _shards(storage, "ffhq", FFHQ_NEEDS)
    if not selfaug and not ffhq:
        raise ConfigError(f"--data {uri} holds no selfaug/*.parquet or ffhq/*.parquet shards: run jobs/build_data.py first")
    kept = 0
    if selfaug:
        kept = int(sum(pq.read_table(p, columns=["kept"], filesystem=storage.fs)["kept"].to_numpy().sum() for p in selfaug))
    n_ffhq = _rows(storage, ffhq) if ffhq else 0
    if kept + n_ffhq == 0:
        raise ConfigError(f"--data {uri} has no kept self-aug rows and no FFHQ rows")
    return {"storage": storage, "selfaug": selfaug, "ffhq": ffhq, "kept": kept, "ffhq_rows": n_ffhq,
            "latents": s_lat and (f_lat or not ffhq) if selfaug else f_lat}


def training_dataset(uri: str, preset: Preset, method: str):
    """The mixed, decoded Ray Dataset of training rows for `method` (columns: face, face_embedding, target,
    prompt[, latents])."""
    import ray

    info = check_training_data(uri)
    # Ray Train prints the training progress; per-batch data progress bars from every epoch would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    # We hand read_parquet the exact shard list (check_training_data listed it), so Ray Data's V2 reader has nothing
    # to discover; its listing task reads footers in nested tasks, which wait for fresh worker processes while the
    # listing task holds its CPU: 12-20 s for six rows on a 2-CPU node, every run. The V1 reader starts reading at once.
    ray.data.DataContext.get_current().use_datasource_v2 = False
    storage, cfg = info["storage"], preset.train
    # Cached latents come from the VAE of the method that drew the set (data.method): another method's VAE (SDXL's
    # vs SD2.1's) encodes differently, so it re-encodes the target images itself.
    extra = ["latents", "latents_shape"] if info["latents"] and preset.data.method == method else []
    parts = []
    if info["kept"]:
        ds = ray.data.read_parquet(info["selfaug"], filesystem=storage.fs,
                                   columns=["source_face", "face_embedding", "prompt", "edited_image", "kept", *extra], num_cpus=0.25)
        ds = ds.filter(lambda row: bool(row["kept"])).rename_columns({"edited_image": "target"}).drop_columns(["kept"])
        parts.append((ds, info["kept"]))
    if info["ffhq_rows"]:
        ds = ray.data.read_parquet(info["ffhq"], filesystem=storage.fs,
                                   columns=["source_face", "face_embedding", "prompt", "target_image", *extra], num_cpus=0.25)
        parts.append((ds.rename_columns({"target_image": "target"}), info["ffhq_rows"]))
    if len(parts) == 2 and 0 < cfg.ffhq_ratio < 1:
        (s, n_s), (f, n_f) = parts
        want_f = cfg.ffhq_ratio / (1 - cfg.ffhq_ratio) * n_s  # FFHQ rows that give the ratio with every self-aug row
        if n_f > want_f:
            f = f.random_sample(want_f / n_f, seed=cfg.seed)
        else:
            s = s.random_sample(n_f * (1 - cfg.ffhq_ratio) / cfg.ffhq_ratio / n_s, seed=cfg.seed)
        ds = s.union(f)
    elif len(parts) == 2:
        ds = parts[1][0] if cfg.ffhq_ratio == 1 else parts[0][0]
    else:
        ds = parts[0][0]
    from facegen.core.methods import get_method

    section, base = preset.method(method), get_method(method).base_family
    # Read from the VAE's config only when latents are cached (a miniature world's VAE is not the family's 8).
    scale = base.vae_scale_factor_of(section.base_model, section.sha256) if extra else base.config.vae_scale_factor
    ds = ds.map_batches(decode_batch, fn_kwargs={"resolution": cfg.resolution, "face_size": section.face_size,
                                                 "vae_scale_factor": scale},
                        batch_size=16, num_cpus=0.25)
    if not cfg.materialize:
        return ds
    ds.context.execution_options.preserve_order = True  # blocks in read order, whatever finishes first
    return ds.materialize()


def exact_split():
    """A Ray Train DataConfig that splits a materialized dataset into equal, fixed parts by row order (rank r gets
    the same rows in every run), instead of the streaming split's first-come assignment."""
    import ray.train

    class ExactSplit(ray.train.DataConfig):
        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            out = [{} for _ in range(world_size)]
            for name, ds in datasets.items():
                for rank, part in enumerate(ds.split(world_size, equal=True)):
                    out[rank][name] = part.iterator()
            return out

    return ExactSplit()

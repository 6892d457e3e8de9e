"""SelfAugBuilder: the self-augmented editability set and the FFHQ ingest as Ray Data pipelines.

    names → GenerateSourceStage → AlignStage → EditStage → ScoreStage [→ LatentStage] → write_shard
    photos → FFHQStage [→ LatentStage] → write_shard

Every stage is a `map_batches` over an actor pool with its own resources (DataConfig); models load once per actor.
`write_shard` writes each batch it gets as one Parquet shard under a temporary name and renames it, so a shard is
either complete or absent. `--resume` reads back which (subject, prompt) pairs and rejected subjects are on disk
and runs only the rest; rows are drawn with seeds that depend only on (subject, prompt), so a resumed build equals
an uninterrupted one. The top-fraction selection (`kept`) runs last over the score columns only — per prompt, no
global shuffle — and rewrites just the shards whose marks change.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from facegen.cluster.data.schema import FFHQ_SCHEMA, SELFAUG_SCHEMA, STATE_SCHEMA, check_columns, with_latents
from facegen.cluster.data.storage import Storage
from facegen.core.config import Preset

SELFAUG, FFHQ, STATE = "selfaug", "ffhq", "_state"
STAGE_NAMES = {"t_generate": "generate", "t_align": "detect+align", "t_edit": "edit", "t_score": "score",
               "t_latents": "latents", "t_ffhq": "ffhq ingest"}


def _key(subject: str, index: int) -> str:
    return f"{subject}\x1f{index}"


def _table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    # Column by column: Ray hands pandas batches with Arrow-backed dtypes that from_pandas cannot always map.
    return pa.table({f.name: pa.array([_plain(v) for v in df[f.name]], f.type) for f in schema}, schema=schema)


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def write_shard(df: pd.DataFrame, uri: str, kind: str, skip: frozenset, latents: bool) -> pd.DataFrame:
    """Write a batch as one shard (rows to <kind>/, rejected subjects to _state/); return its accounting row."""
    storage = Storage.open(uri)
    ok = df[df["status"] == "ok"]
    bad = df[df["status"] != "ok"]
    if kind == SELFAUG:
        ok = ok.assign(kept=False)
        keys = [_key(i, p) for i, p in zip(ok["subject"], ok["prompt_index"])]
        schema = SELFAUG_SCHEMA
    else:
        keys = [_key(i, 0) for i in ok["subject"]]
        schema = FFHQ_SCHEMA
    if skip:
        ok = ok[[k not in skip for k in keys]]
        keys = [k for k in keys if k not in skip]
    if latents:
        schema = with_latents(schema)
    if len(ok):
        name = hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:16]
        storage.write_parquet(f"{kind}/part-{name}.parquet", _table(ok, schema))
    if len(bad):
        state = pd.DataFrame({"kind": kind, "subject": bad["subject"], "status": bad["status"]})
        name = hashlib.sha1("\n".join(sorted(state["subject"])).encode()).hexdigest()[:16]
        storage.write_parquet(f"{STATE}/{kind}-{name}.parquet", _table(state, STATE_SCHEMA))
    acct = {"rows": [len(ok)], "rejected": [len(bad)]}
    for col in STAGE_NAMES:
        acct[col] = [float(df[col].sum()) if col in df else 0.0]
        acct[col + "_n"] = [int((df[col] > 0).sum()) if col in df else 0]
    return pd.DataFrame(acct)


@dataclass
class BuildReport:
    counts: dict = field(default_factory=dict)
    throughput: dict = field(default_factory=dict)  # stage → {"items", "busy_s", "per_s"}
    seconds: float = 0.0


class SelfAugBuilder:
    def __init__(self, preset: Preset, output: Storage):
        self.preset, self.cfg, self.out = preset, preset.data, output
        self.cfg.prompts()  # validate early
        self._acct: list[pd.DataFrame] = []
        self._gpus: bool | None = None

    def _use_gpus(self) -> bool:
        import ray

        if self._gpus is None:
            self._gpus = bool(ray.cluster_resources().get("GPU", 0)) or not self.cfg.cpu_fallback
            if not self._gpus:
                print("no GPU in this Ray cluster: the GPU stages run on CPU (data.cpu_fallback)", flush=True)
        return self._gpus

    # -- Ray Data plumbing ---------------------------------------------------------------------------------------
    def _stage(self, ds, stage_cls, resources, *args):
        from ray.data import ActorPoolStrategy

        return ds.map_batches(stage_cls, fn_constructor_args=(self.preset, *args), batch_format="pandas",
                              batch_size=resources.batch_size, compute=ActorPoolStrategy(size=resources.pool_size),
                              num_gpus=(resources.num_gpus if self._use_gpus() else 0) or None,
                              num_cpus=resources.num_cpus)

    def _write(self, ds, kind: str, skip: set) -> None:
        w = self.cfg.write
        ds = ds.map_batches(write_shard, batch_format="pandas", batch_size=w.batch_size, num_cpus=w.num_cpus,
                            fn_kwargs={"uri": self.out.uri, "kind": kind, "skip": frozenset(skip),
                                       "latents": self.cfg.cache_latents})
        self._acct.append(ds.to_pandas())

    # -- what is on disk ---------------------------------------------------------------------------------------------
    def _state(self, kind: str) -> pd.DataFrame:
        table = self.out.read_parquet(self.out.list(STATE, suffixes=(".parquet",)), ["kind", "subject", "status"])
        df = table.to_pandas()
        return df[df["kind"] == kind] if len(df) else df

    def _done_pairs(self, kind: str) -> pd.DataFrame:
        cols = ["subject", "prompt_index"] if kind == SELFAUG else ["subject"]
        return self.out.read_parquet(self.out.list(kind, suffixes=(".parquet",)), cols).to_pandas()

    # -- self-augmented editing set --------------------------------------------------------------------------------
    def build_selfaug(self, names: list[str]) -> None:
        import ray

        from facegen.cluster.data import stages

        n_prompts = len(self.cfg.prompts())
        pairs = self._done_pairs(SELFAUG)
        per_subject = pairs.groupby("subject").size() if len(pairs) else pd.Series(dtype=int)
        finished = set(per_subject[per_subject >= n_prompts].index) | set(self._state(SELFAUG)["subject"])
        partial = set(per_subject[per_subject < n_prompts].index)
        skip = {_key(i, p) for i, p in zip(pairs["subject"], pairs["prompt_index"]) if i in partial} if len(pairs) else set()
        todo = [n for n in names if n not in finished]
        print(f"self-aug: {len(names)} subjects × {n_prompts} prompts; {len(names) - len(todo)} already done", flush=True)
        if todo:
            c = self.cfg
            blocks = max(1, math.ceil(len(todo) / c.generate.batch_size))
            ds = ray.data.from_items([{"subject": n} for n in todo], override_num_blocks=blocks)
            ds = self._stage(ds, stages.GenerateSourceStage, c.generate)
            ds = self._stage(ds, stages.AlignStage, c.align)
            ds = self._stage(ds, stages.EditStage, c.edit)
            ds = self._stage(ds, stages.ScoreStage, c.score)
            if c.cache_latents:
                ds = self._stage(ds, stages.LatentStage, c.latents, "edited_image")
            self._write(ds, SELFAUG, skip)
        self.mark_kept()

    def mark_kept(self) -> None:
        """Per prompt, mark the top `keep_fraction` (at least one row) by the ranking score; ties broken by name."""
        import ray

        paths = self.out.list(SELFAUG, suffixes=(".parquet",))
        if not paths:
            return
        cols = ["subject", "prompt_index", "prompt", "id_score", "clip_score", "kept"]
        frames = []
        for path in paths:
            df = self.out.read_parquet([path], cols).to_pandas()
            df["path"] = path
            frames.append(df)
        df = pd.concat(frames, ignore_index=True)
        df["rank"] = self.cfg.id_weight * df["id_score"] + self.cfg.clip_weight * df["clip_score"] / 100.0
        keep = np.zeros(len(df), bool)
        for _, group in df.groupby("prompt", sort=False):
            order = group.sort_values(["rank", "subject"], ascending=[False, True], kind="stable")
            n_keep = max(1, math.ceil(len(group) * self.cfg.keep_fraction))
            keep[order.index[:n_keep]] = True
        df["new_kept"] = keep
        changed = df[df["kept"] != df["new_kept"]]["path"].unique()
        rewrite = ray.remote(num_cpus=0.25)(_rewrite_kept)
        refs = []
        for path in changed:
            rows = df[(df["path"] == path) & df["new_kept"]]
            refs.append(rewrite.remote(self.out.uri, path, [_key(i, x) for i, x in zip(rows["subject"], rows["prompt_index"])]))
        ray.get(refs)

    # -- FFHQ ----------------------------------------------------------------------------------------------------
    def build_ffhq(self, source_uri: str) -> None:
        import ray

        from facegen.cluster.data import stages

        src = Storage.open(source_uri)
        files = src.image_files("--ffhq")
        items = [{"path": f, "subject": _file_id(src, f)} for f in files]
        done = set(self._done_pairs(FFHQ).get("subject", [])) | set(self._state(FFHQ)["subject"])
        todo = [it for it in items if it["subject"] not in done]
        print(f"ffhq: {len(items)} photos; {len(items) - len(todo)} already done", flush=True)
        if todo:
            c = self.cfg
            ds = ray.data.from_items(todo, override_num_blocks=max(1, math.ceil(len(todo) / c.ffhq.batch_size)))
            ds = self._stage(ds, stages.FFHQStage, c.ffhq, src.uri)
            if c.cache_latents:
                ds = self._stage(ds, stages.LatentStage, c.latents, "target_image")
            self._write(ds, FFHQ, set())

    # -- accounting ------------------------------------------------------------------------------------------------
    def report(self, seconds: float) -> BuildReport:
        counts = {}
        state = self._state(SELFAUG)
        scored = self.out.read_parquet(self.out.list(SELFAUG, suffixes=(".parquet",)), ["subject", "kept"]).to_pandas()
        ok_ids = scored["subject"].nunique() if len(scored) else 0
        counts["generated"] = int(ok_ids + len(state))
        counts["no_face"] = int((state["status"] == "no_face").sum()) if len(state) else 0
        counts["too_small"] = int((state["status"] == "too_small").sum()) if len(state) else 0
        counts["scored"] = int(len(scored))
        counts["kept"] = int(scored["kept"].sum()) if len(scored) else 0
        fstate = self._state(FFHQ)
        fkept = len(self._done_pairs(FFHQ))
        counts["ffhq_in"] = int(fkept + len(fstate))
        counts["ffhq_no_face"] = int((fstate["status"] == "no_face").sum()) if len(fstate) else 0
        counts["ffhq_unreadable"] = int((fstate["status"] == "unreadable").sum()) if len(fstate) else 0
        counts["ffhq_kept"] = int(fkept)
        throughput = {}
        if self._acct:
            acct = pd.concat(self._acct, ignore_index=True).sum()
            for col, stage in STAGE_NAMES.items():
                busy, n = float(acct.get(col, 0.0)), int(acct.get(col + "_n", 0))
                if n:
                    throughput[stage] = {"items": n, "busy_s": round(busy, 3), "per_s": round(n / max(busy, 1e-9), 3)}
        return BuildReport(counts=counts, throughput=throughput, seconds=seconds)


def _file_id(src: Storage, path: str) -> str:
    """An FFHQ photo's subject: its path relative to --ffhq, extension included (a.png and a.jpg are two)."""
    return path[len(src.root):].lstrip("/")


def _rewrite_kept(uri: str, path: str, kept_keys: list[str]) -> None:
    """Rewrite one shard's `kept` column (atomically, like every shard write)."""
    import pyarrow.parquet as pq

    storage = Storage.open(uri)
    table = pq.read_table(path, filesystem=storage.fs)
    check_columns(table.schema, ("subject", "prompt_index", "kept"), path)
    wanted = set(kept_keys)
    kept = [_key(i, p) in wanted for i, p in zip(table["subject"].to_pylist(), table["prompt_index"].to_pylist())]
    table = table.set_column(table.schema.get_field_index("kept"), "kept", pa.array(kept, pa.bool_()))
    storage.write_parquet(path[len(storage.root):].lstrip("/"), table)


def run_build(preset: Preset, output: Storage, names: list[str] | None, ffhq: str | None,
              num_identities: int | None) -> BuildReport:
    start = time.perf_counter()
    builder = SelfAugBuilder(preset, output)
    if names is not None and num_identities != 0:
        builder.build_selfaug(names[:num_identities] if num_identities else names)
    if ffhq:
        builder.build_ffhq(ffhq)
    return builder.report(time.perf_counter() - start)

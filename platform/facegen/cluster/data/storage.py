"""Where jobs read and write: a local path or a remote URI (s3://bucket/prefix, or any fsspec scheme whose package
is installed: gs:// with gcsfs, az:// with adlfs, ...), through one pyarrow filesystem.

`Storage.open(uri)` resolves the URI once; every job then uses `path(...)`, `write_atomic`, `write_parquet`,
`list` and `read_*` on it, and hands `fs` to Ray Data's readers and Ray Train's checkpoint storage. Remote schemes go
through fsspec (s3:// through `s3fs`), wrapped as a pyarrow filesystem so every consumer sees one interface. For S3
the endpoint comes from AWS_ENDPOINT_URL (MinIO, moto, ...) and credentials from the usual AWS environment variables.

Atomic writes: locally a file is written under a hidden temporary name in the same directory and renamed, so a
reader (or `--resume`) never sees half a file. On S3 an object becomes visible only when its upload completes, so
writing the final key directly has the same property (S3 has no rename; a copy would double the traffic).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from facegen.core.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class Storage:
    uri: str
    fs: pafs.FileSystem
    root: str  # the path inside `fs`: an absolute local path or "bucket/prefix"

    @property
    def is_remote(self) -> bool:
        return "://" in self.uri

    @classmethod
    def open(cls, uri: str) -> Storage:
        uri = str(uri)
        scheme, sep, rest = uri.partition("://")
        if sep and scheme != "file":
            root = rest.strip("/")
            if not root:
                raise ConfigError(f"'{uri}' names no bucket: use {scheme}://bucket/prefix")
            return cls(uri.rstrip("/"), remote_filesystem(scheme, uri), root)
        root = os.path.abspath(os.path.expanduser(rest if sep else uri))
        return cls(root, pafs.LocalFileSystem(), root)

    # -- paths -------------------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def uri_of(self, *parts: str) -> str:
        return posixpath.join(self.uri, *parts) if parts else self.uri

    def info(self, *parts: str) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path(*parts))

    def exists(self, *parts: str) -> bool:
        return self.info(*parts).type != pafs.FileType.NotFound

    def is_file(self, *parts: str) -> bool:
        return self.info(*parts).type == pafs.FileType.File

    def is_dir(self, *parts: str) -> bool:
        return self.info(*parts).type == pafs.FileType.Directory

    def list(self, *parts: str, suffixes: tuple[str, ...] = (), recursive: bool = False) -> list[str]:
        """Sorted file paths (inside `fs`) under a directory, hidden/temporary files left out."""
        base = self.path(*parts)
        if self.info(*parts).type == pafs.FileType.NotFound:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
        out = [
            i.path for i in infos
            if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))
            and (not suffixes or i.base_name.lower().endswith(suffixes))
        ]
        return sorted(out)

    def image_files(self, flag: str) -> list[str]:
        """Every image under this location (recursively), or a ConfigError naming the command-line `flag` when the
        location is missing or holds none."""
        if not self.is_dir():
            raise ConfigError(f"{flag} {self.uri}: no such directory")
        files = self.list(suffixes=IMAGE_SUFFIXES, recursive=True)
        if not files:
            raise ConfigError(f"{flag} {self.uri} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files

    # -- writing -------------------------------------------------------------------------------------------------
    def prepare_output(self) -> None:
        """Check the output location can be a directory; create it locally."""
        kind = self.info().type
        if kind == pafs.FileType.File:
            raise ConfigError(f"--output {self.uri} is a file: give a directory (or s3://bucket/prefix)")
        if not self.is_remote:
            try:
                self.fs.create_dir(self.root, recursive=True)
            except OSError as e:
                raise ConfigError(f"cannot create --output {self.uri}: {e}") from None

    def write_atomic(self, relpath: str, data: bytes) -> str:
        final = self.path(relpath)
        parent = posixpath.dirname(final)
        if self.is_remote:
            with self.fs.open_output_stream(final) as f:
                f.write(data)
            return final
        self.fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(final)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, final)
        finally:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                self.fs.delete_file(tmp)
        return final

    def write_json(self, relpath: str, obj) -> str:
        return self.write_atomic(relpath, (json.dumps(obj, indent=2, default=str) + "\n").encode())

    def write_parquet(self, relpath: str, table: pa.Table) -> str:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return self.write_atomic(relpath, buf.getvalue())

    # -- reading -------------------------------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        """`path` as `list` returns it (inside `fs`)."""
        with self.fs.open_input_stream(path) as f:
            return f.read()

    @contextlib.contextmanager
    def local_copy(self):
        """A local directory holding this location's files, for loaders that want a path (from_pretrained): the
        directory itself, or a temporary copy of an s3:// prefix, removed on exit. An object key that would land
        outside the copy (`model/sub/../../x`) is refused."""
        if not self.is_remote:
            yield self.root
            return
        import shutil
        import tempfile

        target = tempfile.mkdtemp(prefix="facegen-")
        try:
            for path in self.list(recursive=True):
                dest = safe_destination(target, posixpath.relpath(path, self.root))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "wb") as f:
                    f.write(self.read_bytes(path))
            yield target
        finally:
            shutil.rmtree(target, ignore_errors=True)

    def write_tree(self, relpath: str, local_dir: str) -> None:
        """Publish a local directory as <relpath>/, whole or not at all: locally it is copied beside the target under
        a hidden name and swapped in with renames (an earlier version is replaced entirely, never mixed); on S3,
        where objects appear one by one, config.json is written last, so a reader that waits for it sees a
        complete export."""
        import shutil

        files = sorted((os.path.relpath(os.path.join(root, n), local_dir) for root, _, names in os.walk(local_dir)
                        for n in names), key=lambda rel: (rel == "config.json", rel))
        if self.is_remote:
            for rel in files:
                with open(os.path.join(local_dir, rel), "rb") as f:
                    self.write_atomic(posixpath.join(relpath, rel.replace(os.sep, "/")), f.read())
            return
        final = self.path(relpath)
        parent, name = posixpath.split(final)
        os.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        old = posixpath.join(parent, f".{name}.old-{uuid.uuid4().hex[:8]}")
        try:
            shutil.copytree(local_dir, tmp, copy_function=shutil.copy2)
            if os.path.exists(final) and _exchange(tmp, final):
                old = tmp  # the earlier version now sits under the temporary name
            else:
                if os.path.exists(final):  # no atomic exchange here (not Linux): a moment without an export
                    os.replace(final, old)
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    def read_json(self, relpath: str):
        return json.loads(self.read_bytes(self.path(relpath)))

    def read_parquet(self, paths: list[str], columns: list[str] | None = None) -> pa.Table:
        tables = [pq.read_table(p, columns=columns, filesystem=self.fs) for p in paths]
        return pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns or []})


def remote_filesystem(scheme: str, uri: str) -> pafs.FileSystem:
    """The fsspec filesystem for `scheme`, as a pyarrow filesystem. Instance and listing caches are off: a job that
    checks what exists (--resume) must see the store as it is now, not as an earlier listing saw it."""
    import fsspec

    try:
        cls = fsspec.get_filesystem_class(scheme)
    except ValueError:
        raise ConfigError(f"'{uri}': unknown storage scheme '{scheme}://' (local paths, s3://, or an fsspec scheme)") from None
    except ImportError as e:
        raise ConfigError(f"'{uri}': the '{scheme}://' scheme needs a package that is not installed ({e})") from None
    kwargs = {"skip_instance_cache": True, "use_listings_cache": False}
    if scheme in ("s3", "s3a"):
        client = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            client["endpoint_url"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            client["region_name"] = region
        kwargs["client_kwargs"] = client
    return pafs.PyFileSystem(pafs.FSSpecHandler(cls(**kwargs)))


def safe_destination(target: str, relpath: str) -> str:
    """`target/relpath`, or a ConfigError when the path would leave `target` (absolute, or `..` past its root)."""
    dest = os.path.normpath(os.path.join(target, relpath))
    if os.path.isabs(relpath) or os.path.commonpath([os.path.abspath(target), os.path.abspath(dest)]) != os.path.abspath(target):
        raise ConfigError(f"object key '{relpath}' points outside its prefix: refusing to copy it")
    return dest


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE), so a reader of `b` always finds a whole
    directory, the old or the new one; False where the system has no such call."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


"""Training pieces that need no cluster."""


def test_deepspeed_on_the_cpu_starts_without_compiling_its_shared_memory_allreduce(monkeypatch, tmp_path):
    """The CPU backend would JIT-compile DeepSpeed's shared-memory all-reduce at engine start (~70 s of C++); with the
    op marked incompatible, the backend's builder returns without building anything."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from deepspeed.comm.torch import build_shm_op
    from facegen.train.strategies import skip_shared_memory_allreduce_build

    skip_shared_memory_allreduce_build()
    assert build_shm_op() is None
    assert not list(tmp_path.iterdir())  # nothing was built

"""Training pieces that need no cluster."""


def test_deepspeed_on_the_cpu_starts_without_compiling_its_shared_memory_allreduce(monkeypatch, tmp_path):
    """The CPU backend would JIT-compile DeepSpeed's shared-memory all-reduce at engine start (~70 s of C++); with the
    op marked incompatible, the backend's builder returns without building anything."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from deepspeed.comm.torch import build_shm_op
    from facegen.cluster.train.strategies import skip_shared_memory_allreduce_build

    skip_shared_memory_allreduce_build()
    assert build_shm_op() is None
    assert not list(tmp_path.iterdir())  # nothing was built


def test_zero_offload_is_configured_on_gpus_and_checked():
    """train.deepspeed_offload: the optimizer (and with ZeRO-3 the parameters) in CPU RAM on a GPU cluster; on a CPU
    run there is nothing to offload; parameters offload only under stage 3."""
    import pytest
    from facegen.cluster.train.strategies import deepspeed_config
    from facegen.core.config.train import TrainConfig
    from facegen.core.errors import ConfigError

    zero = deepspeed_config(3, 1, 1e-4, 0.0, 1.0, on_gpu=True, offload="all")["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"
    zero = deepspeed_config(2, 1, 1e-4, 0.0, 1.0, on_gpu=True, offload="optimizer")["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and "offload_param" not in zero
    assert "offload_optimizer" not in deepspeed_config(3, 1, 1e-4, 0.0, 1.0, on_gpu=False, offload="all")["zero_optimization"]
    with pytest.raises(ConfigError, match="needs train.deepspeed_stage=3"):
        TrainConfig(deepspeed_offload="all").validate("deepspeed")
    with pytest.raises(ConfigError, match="deepspeed_offload 'disk'"):
        TrainConfig(deepspeed_offload="disk").validate("deepspeed")

import torch
from facegen.core.methods.dreamidentity.encoder import M2Encoder
from facegen.core.models.config import ARCHS
from facegen.core.models.face_vit import FaceViT, load_arcface_checkpoint

TINY_VIT = FaceViT.Config(embed_dim=32, depth=4, num_heads=4, num_features=512)


def arcface_torch_keys(dim: int, depth: int, patches: int, features: int) -> dict[str, tuple]:
    """The state-dict layout of arcface_torch's backbones/vit.py VisionTransformer (ln norm), written out by name."""
    keys = {"pos_embed": (1, patches, dim), "mask_token": (1, 1, dim),
            "patch_embed.proj.weight": (dim, 3, 9, 9), "patch_embed.proj.bias": (dim,),
            "norm.weight": (dim,), "norm.bias": (dim,),
            "feature.0.weight": (dim, dim * patches), "feature.2.weight": (features, dim)}
    for bn, n in (("feature.1", dim), ("feature.3", features)):
        keys.update({f"{bn}.weight": (n,), f"{bn}.bias": (n,), f"{bn}.running_mean": (n,), f"{bn}.running_var": (n,),
                     f"{bn}.num_batches_tracked": ()})
    for i in range(depth):
        b = f"blocks.{i}"
        keys.update({f"{b}.norm1.weight": (dim,), f"{b}.norm1.bias": (dim,), f"{b}.norm2.weight": (dim,),
                     f"{b}.norm2.bias": (dim,), f"{b}.attn.qkv.weight": (3 * dim, dim),
                     f"{b}.attn.proj.weight": (dim, dim), f"{b}.attn.proj.bias": (dim,),
                     f"{b}.mlp.fc1.weight": (4 * dim, dim), f"{b}.mlp.fc1.bias": (4 * dim,),
                     f"{b}.mlp.fc2.weight": (dim, 4 * dim), f"{b}.mlp.fc2.bias": (dim,)})
    return keys


def test_state_dict_matches_arcface_torch_names():
    for arch in ("vit_t", "vit_s"):
        cfg = FaceViT.Config.named(arch)
        model = FaceViT(cfg)
        expected = arcface_torch_keys(cfg.embed_dim, cfg.depth, 144, 512)
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert got == expected


def test_arcface_checkpoint_loads(tmp_path):
    torch.manual_seed(1)
    state = {k: torch.randn(s) if s else torch.tensor(7) for k, s in arcface_torch_keys(32, 4, 144, 512).items()}
    state = {f"module.{k}": v for k, v in state.items()}  # as saved from a DDP-wrapped backbone
    path = tmp_path / "model.pt"
    torch.save(state, path)
    model = FaceViT(TINY_VIT)
    load_arcface_checkpoint(model, path)
    assert torch.equal(model.blocks[2].attn.qkv.weight, state["module.blocks.2.attn.qkv.weight"])
    assert torch.equal(model.feature[3].running_var, state["module.feature.3.running_var"])


def test_wrong_checkpoint_is_refused(tmp_path):
    from facegen.core.errors import ModelNotFound

    path = tmp_path / "other.pt"
    torch.save({k: torch.zeros(s) for k, s in arcface_torch_keys(64, 4, 144, 512).items()}, path)
    try:
        load_arcface_checkpoint(FaceViT(TINY_VIT), path)
    except ModelNotFound as e:
        assert "does not match" in str(e)
    else:
        raise AssertionError("a 64-d checkpoint loaded into a 32-d ViT")


def test_taps_and_shapes():
    model = FaceViT(TINY_VIT).eval()
    assert model.default_taps() == [1, 2, 3, 4]
    assert FaceViT(FaceViT.Config.named("vit_s")).default_taps() == [3, 6, 9, 12]
    assert FaceViT(FaceViT.Config.named("vit_b")).default_taps() == [6, 12, 18, 24]
    out = model(torch.randn(2, 3, 112, 112))
    assert [t.shape for t in out.taps] == [torch.Size([2, 32])] * 4
    assert out.patch_tokens.shape == (2, 144, 32) and out.identity.shape == (2, 512)
    assert set(ARCHS) == {"vit_t", "vit_s", "vit_b", "vit_l"}


def m2_config(**kw) -> M2Encoder.Config:
    return M2Encoder.Config(vit=TINY_VIT, num_tokens=2, token_dim=16, hidden_dim=24, **kw)


def test_m2_round_trip(tmp_path):
    model = M2Encoder.from_config_random(m2_config())
    faces = torch.rand(3, 3, 112, 112) * 2 - 1
    before = model(faces)
    assert before.shape == (3, 2, 16)
    model.save_pretrained(tmp_path / "m2")
    assert sorted(p.name for p in (tmp_path / "m2").iterdir()) == ["config.json", "model.safetensors"]
    loaded = M2Encoder.from_pretrained(tmp_path / "m2")
    assert torch.equal(loaded(faces), before)
    other = M2Encoder.from_config_random(m2_config(seed=1))
    assert not torch.allclose(other(faces), before)


def test_gradients_reach_the_projectors_not_the_frozen_vit():
    model = M2Encoder.from_config_random(m2_config()).train()
    emb = model(torch.rand(2, 3, 112, 112))
    loss = emb.pow(2).mean() + 1e-4 * M2Encoder.regularization_loss(emb)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projectors.parameters())
    assert all(p.grad is None for p in model.vit.parameters())
    trainable = M2Encoder.from_config_random(m2_config()).train()
    trainable.vit.requires_grad_(True)  # methods.dreamidentity.train.train_vit
    trainable(torch.rand(1, 3, 112, 112)).sum().backward()  # batch of one: the BN head stays in eval
    assert trainable.vit.blocks[0].attn.qkv.weight.grad is not None


def test_regularization_loss_is_the_sum_of_norms():
    emb = torch.tensor([[[3.0, 4.0], [0.0, 1.0]], [[6.0, 8.0], [0.0, 0.0]]])
    assert M2Encoder.regularization_loss(emb).item() == (5 + 1 + 10 + 0) / 2

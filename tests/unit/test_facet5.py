"""FaceT5-FLUX's encoder against ByteDance's own code (fixtures made once from bytedance/FaceCLIP @ a984887 by
tests/fixtures/facet5_official/make_fixtures.py): the published state dict's names and shapes, key for key at full
size, and the outputs at reduced size."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from facegen.methods.faceclip.config import OfficialFuserConfig
from facegen.methods.facet5.config import ClipLConfig, FaceT5Config, T5StackConfig
from facegen.methods.facet5.encoder import FaceT5FluxEncoder
from facegen.models.config import FaceViTConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "facet5_official"


def small_config(meta: dict) -> FaceT5Config:
    s, t, v, c = meta["small"], meta["small"]["t5"], meta["small"]["vit"], meta["small"]["clip"]
    return FaceT5Config(
        t5=T5StackConfig(vocab_size=t["vocab_size"], d_model=s["d_model"], layers=t["num_layers"], heads=t["num_heads"],
                         d_kv=t["d_kv"], d_ff=t["d_ff"], max_length=t["max_sequence_length"]),
        clip_l=ClipLConfig(hidden=c["hidden_size"], layers=c["num_hidden_layers"], heads=c["num_attention_heads"],
                           intermediate=c["intermediate_size"], vocab_size=c["vocab_size"]),
        vit=FaceViTConfig(embed_dim=v["embed_dim"], depth=v["depth"], num_heads=v["num_heads"],
                          num_features=v["num_features"]),
        fuser=OfficialFuserConfig(layers=s["fuser"]["layers"], ffn=s["fuser"]["ffn"]))


@pytest.fixture(scope="module")
def fixture():
    return np.load(FIXTURES / "small.npz")


def test_the_published_checkpoint_layout_key_for_key():
    """Every key and shape of the official full-size wrapper (face_t5_encoder.pt's layout), on the meta device."""
    expected = json.loads((FIXTURES / "full_keys.json").read_text())
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in FaceT5FluxEncoder().state_dict().items()}
    assert ours == expected
    assert sum(int(np.prod(s)) for s in ours.values()) == 6_274_222_594


def test_outputs_match_the_official_code(fixture):
    meta = json.loads(str(fixture["meta"]))
    model = FaceT5FluxEncoder(small_config(meta)).eval()
    state = {k.removeprefix("state/"): torch.from_numpy(fixture[k]) for k in fixture.files if k.startswith("state/")}
    model.load_state_dict(state, strict=True)
    faces, t5_ids, clip_ids = (torch.from_numpy(fixture[k]) for k in ("faces", "t5_ids", "clip_ids"))
    with torch.no_grad():
        embeds, pooled = model(clip_ids, t5_ids, faces)
        negative, _ = model(clip_ids, t5_ids, torch.zeros_like(faces))
    assert embeds.shape == (2, meta["small"]["t5"]["max_sequence_length"], meta["small"]["d_model"])
    torch.testing.assert_close(embeds, torch.from_numpy(fixture["prompt_embeds"]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(negative, torch.from_numpy(fixture["negative_prompt_embeds"]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled, torch.from_numpy(fixture["pooled"]), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(embeds, negative, atol=1e-3)  # the face reaches the output


def test_each_face_is_encoded_alone_in_a_batch(fixture):
    """Two different people in one batch give each the embeddings they get alone (the official face layer would
    mix them; its weights mean one face at a time)."""
    meta = json.loads(str(fixture["meta"]))
    model = FaceT5FluxEncoder(small_config(meta)).eval()
    faces, t5_ids, clip_ids = (torch.from_numpy(fixture[k]) for k in ("faces", "t5_ids", "clip_ids"))
    with torch.no_grad():
        together, _ = model(clip_ids, t5_ids, faces)
        alone = torch.cat([model(clip_ids[i:i + 1], t5_ids[i:i + 1], faces[i:i + 1])[0] for i in range(2)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)

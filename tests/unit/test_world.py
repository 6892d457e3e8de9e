"""The miniature world's properties (bench/learn.py measures the learning itself): its identities are distinct to
ArcFace, its regions are disjoint and decided before anything is built, its base models are in the diffusers layout
and draw from a code through the methods' own injection paths, its scoring cannot be passed by grey noise, and bad
photo folders are one clear error."""
import itertools
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from facegen.cluster.world.build import INPUT, REFERENCE, build_world
from facegen.cluster.world.config import WorldConfig
from facegen.cluster.world.identities import make_identities, nearest_train
from facegen.cluster.world.people import WorldError, blend_views, find_people, grayscale

# Four anchors, the anchors alone as training identities, one reserved pair each for validation and held-out: small
# enough to train in seconds, trained enough that each code draws its own anchor.
TINY_WORLD = WorldConfig(anchors=4, identities=4, validation_pairs=1, held_out_pairs=1, per_pair=1, views=4, size=32,
                         vae_steps=120, base_steps=200, batch_size=8, unet_width=32, ema=0.98, edit_share=0.0, lr=2e-3,
                         sdxl_min_snr_gamma=0.0)


GUIDANCE = {"dreamidentity": 3.0, "faceclip": 3.0, "dreamidentity-sdxl": 3.0}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as m:
        yield m


@pytest.fixture(scope="module")
def world(analyzer, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("FACEGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
    return build_world(analyzer, None, TINY_WORLD, log=lambda _: None)


@pytest.fixture(scope="module")
def anchors(analyzer):
    return find_people(analyzer, None, 0)


def test_shipped_photos_give_distinct_anchors(anchors):
    assert len(anchors) >= 10  # the astronaut, t1.jpg's six, Tom Hanks, Grace Hopper, Yao Ming, ...
    names = [p.name for p in anchors]
    assert len(set(names)) == len(names) and all(names)
    e = np.stack([p.embedding for p in anchors])
    sims = e @ e.T - np.eye(len(anchors))
    assert sims.max() < 0.4  # one entry per person (Yao Ming is in two of the photos)


def test_regions_are_disjoint_and_held_out_identities_are_far_from_training():
    d = WorldConfig()
    ids = make_identities(13, d.identities, d.validation_pairs, d.held_out_pairs, d.per_pair, d.min_weight,
                          d.min_distance, d.seed)
    assert ids == make_identities(13, d.identities, d.validation_pairs, d.held_out_pairs, d.per_pair, d.min_weight,
                                  d.min_distance, d.seed)  # seeded
    by = {s: [o for o in ids if o.split == s] for s in ("train", "validation", "held_out")}
    assert len(by["train"]) == d.identities and len(by["held_out"]) >= 20 and len(by["validation"]) >= 16
    assert len({o.name for o in ids}) == len(ids)
    pairs = {s: {o.anchors for o in by[s]} for s in ("validation", "held_out")}
    assert not pairs["validation"] & pairs["held_out"]
    for s in ("validation", "held_out"):
        for o in by[s]:
            assert len(o.anchors) == 2 and min(o.w[list(o.anchors)]) >= d.min_weight and abs(o.w.sum() - 1) < 1e-9
        for a, b in itertools.combinations(by[s], 2):
            assert np.linalg.norm(a.w - b.w) >= d.min_distance
    # no training identity was ever a blend of a reserved pair
    for o in by["train"]:
        assert not any(set(p) <= set(o.anchors) for p in pairs["validation"] | pairs["held_out"])
    # so the nearest training identity of a held-out one is far off in weight space (a lookup cannot reach it)
    gaps = [np.linalg.norm(o.w - nearest_train(ids, o).w) for o in by["held_out"]]
    assert min(gaps) > 0.3


def test_too_few_anchors_for_the_regions_is_one_clear_error(analyzer, tmp_path, photos, monkeypatch):
    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WorldError, match="lower world.validation_pairs"):
        build_world(analyzer, None, WorldConfig(anchors=3), log=lambda _: None)


def test_blended_identities_are_told_apart_by_arcface(anchors, analyzer):
    """ArcFace separates the blends: each held-out identity's input view is nearest its own reference among all held
    out, at the drawings' size (32²), though no input is the reference itself."""
    d = WorldConfig()
    ids = [o for o in make_identities(len(anchors), 40, d.validation_pairs, d.held_out_pairs, d.per_pair,
                                      d.min_weight, d.min_distance, d.seed) if o.split == "held_out"]
    from facegen.cluster.world.build import resize

    views = np.stack([blend_views(anchors, o.w, 2, 112, 0, o.name) for o in ids])
    refs = analyzer.embed_aligned(list(resize(views[:, REFERENCE], 32)))
    inputs = analyzer.embed_aligned(list(resize(views[:, INPUT], 32)))
    assert not any(np.array_equal(v[REFERENCE], v[INPUT]) for v in views)
    sims = inputs @ refs.T
    assert (sims.argmax(axis=1) == np.arange(len(ids))).mean() >= 0.8
    between = (refs @ refs.T)[np.triu_indices(len(ids), 1)]
    assert np.median(np.diag(sims)) > np.percentile(between, 95)


def test_views_are_seeded_and_the_reference_is_the_plain_blend(anchors):
    w = np.zeros(len(anchors))
    w[0], w[1] = 0.5, 0.5
    a, b = blend_views(anchors, w, 3, 112, 0, "x"), blend_views(anchors, w, 3, 112, 0, "x")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[1], a[2])
    from facegen.core.face.align import align_face

    plain = [align_face(p.photos[0], p.landmarks[0], 112).astype(np.float32) for p in anchors[:2]]
    expected = (0.5 * plain[0] + 0.5 * plain[1]).round()
    # the blend is of the aligned crops (edge pixels differ only by the border mode: reflect vs black)
    assert np.abs(a[0][8:-8, 8:-8].astype(np.float32) - expected[8:-8, 8:-8]).mean() < 2.0


def test_the_edit_score_is_not_passed_by_grey_noise(anchors):
    from facegen.cluster.world.people import colourfulness
    from facegen.cluster.world.score import black_and_white

    w = np.eye(len(anchors))[0]
    colour = blend_views(anchors, w, 6, 32, 0, "c")
    median = float(np.median(colourfulness(colour)))
    grey_noise = grayscale(np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    # an edited drawing scores near 1 and a colour one low, but the effect is a difference: noise grey for both
    # prompts shows no effect
    assert black_and_white(grayscale(colour), median).min() > 0.95 and black_and_white(colour, median).mean() < 0.6
    effect_noise = black_and_white(grey_noise, median).mean() - black_and_white(grey_noise, median).mean()
    effect_edit = black_and_white(grayscale(colour), median).mean() - black_and_white(colour, median).mean()
    assert effect_noise == 0 and effect_edit > 0.4


@pytest.mark.parametrize("model", ["buffalo_s", "dlib"])
def test_identification_rank_and_bootstrap(model):
    """The same drawings score the same under either backend's metric (ArcFace cosine, dlib's 1 − distance)."""
    from facegen.cluster.world.score import bootstrap, closer, identify
    from facegen.core.face.config import FaceAnalyzerConfig
    from facegen.core.face.registry import face_metric

    metric = face_metric(FaceAnalyzerConfig(model=model))
    refs = np.eye(3)
    # identity 0's two drawings: one nearest itself, one nearest identity 2; identity 1: both right; identity 2: wrong
    e = np.array([[[1, 0, 0.5], [0.2, 0, 1]], [[0, 1, 0], [0.1, 1, 0]], [[1, 0.5, 0.9], [1, 0, 0]]], np.float64)
    r = identify(e, refs, np.arange(3), metric)
    np.testing.assert_allclose(r["identification"], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(r["mean_rank"], [1.5, 1.0, 2.0])
    np.testing.assert_allclose(closer(e, refs, refs[[1, 0, 0]], metric), [1.0, 1.0, 0.0])
    lo, hi = bootstrap(np.array([0.0, 1.0] * 20), 500, 0)
    assert lo < 0.5 < hi and hi - lo < 0.4
    assert bootstrap(np.ones(5), 100, 0) == [1.0, 1.0]


def test_base_models_load_through_the_real_paths_and_codes_go_through_the_methods_paths(world, tmp_path, analyzer):
    """The SD2.1 model's name of a training identity, its code in M²'s S* slots, and an M² encoder that writes that
    code all draw the same image; FaceCLIP's ceiling is FaceCLIP's own id slot holding the code."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from facegen.cluster.world.base import code_of, load_codes, name_word
    from facegen.cluster.world.experiment import PLAIN_PROMPT, Evaluator, LearnConfig, write_job_inputs, write_preset

    sd = StableDiffusionPipeline.from_pretrained(world.sd21, safety_checker=None, requires_safety_checker=False)
    assert sd.vae.config.latent_channels == TINY_WORLD.latent_channels
    xl = StableDiffusionXLPipeline.from_pretrained(world.sdxl)
    assert xl.vae.config.scaling_factor == sd.vae.config.scaling_factor  # one VAE for both
    cfg = LearnConfig(world=TINY_WORLD, samples=1, steps=4, ffhq_views=2)
    preset = write_preset(world, tmp_path, cfg, GUIDANCE)
    photos, names = write_job_inputs(world, tmp_path, cfg)
    train = world.split("train")
    assert names.read_text().split() == [name_word(o.name) for o in train]
    assert sorted(p.name for p in photos.iterdir()) == sorted(o.name for o in train)
    # the job sees training views only: never a reference or an input view, never a held-out identity
    written = np.asarray(PIL.Image.open(photos / train[0].name / "01.png"))
    np.testing.assert_array_equal(written, world.training_views(train[0].name)[0])

    ev = Evaluator(world, preset, analyzer, cfg)
    o = train[1]
    pipe = ev.pipeline("dreamidentity")
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    by_code = pipe(PLAIN_PROMPT, identity=ev.code_identities("dreamidentity", [o.w])[0], generator=gen(),
                   output_type="np").images
    sd.scheduler = pipe.scheduler
    by_name = sd(PLAIN_PROMPT.replace("S*", name_word(o.name)), num_inference_steps=4, guidance_scale=3.0,
                 width=32, height=32, generator=gen(), output_type="np").images
    np.testing.assert_allclose(by_code, by_name, atol=1e-5)
    code = code_of(load_codes(world.sd21), o.w)[0]
    with torch.no_grad():  # an M² encoder whose projectors write the code, whatever the face
        for j, proj in enumerate(pipe.m2_encoder.projectors):
            proj[-1].weight.zero_()
            proj[-1].bias.copy_(code[j])
    by_encoder = pipe(PLAIN_PROMPT, identity=pipe.face_encoder.from_aligned(world.input_view(o.name)[None]),
                      generator=gen(), output_type="np").images
    np.testing.assert_allclose(by_encoder, by_code, atol=1e-5)

    fc = ev.pipeline("faceclip")
    ceiling = ev.pipeline("faceclip", code=True)
    assert str(world.sdxl) in str(fc.unet.config._name_or_path)
    codes = code_of(load_codes(world.sdxl), o.w)
    with torch.no_grad():  # a fresh FaceCLIP encoder (fusion gates at zero) whose id projection writes the code
        for branch, c in ((fc.faceclip_encoder.branch_1, codes[0]), (fc.faceclip_encoder.branch_2, codes[1])):
            branch.id_proj.weight.zero_()
            branch.id_proj.bias.copy_(c[0])
    # guidance 1: no negative branch (FaceCLIP's negative reads its zero face, the ceiling's a zero code)
    a = fc(PLAIN_PROMPT, identity=fc.face_encoder.from_aligned(world.input_view(o.name)[None]), generator=gen(),
           guidance_scale=1.0, output_type="np").images
    b = ceiling(PLAIN_PROMPT, identity=ev.code_identities("faceclip", [o.w])[0], generator=gen(), guidance_scale=1.0,
                output_type="np").images
    np.testing.assert_allclose(a, b, atol=1e-5)

    # DreamIdentity on SDXL: its own SDXL-layout model (one VAE with the others), the code in S*'s slots of both
    # towers; an M² writing that code draws the same image
    xl_m2 = ev.pipeline("dreamidentity-sdxl")
    assert str(world.sdxl_tokens) in str(xl_m2.unet.config._name_or_path)
    assert xl_m2.vae.config.scaling_factor == sd.vae.config.scaling_factor
    by_code = xl_m2(PLAIN_PROMPT, identity=ev.code_identities("dreamidentity-sdxl", [o.w])[0], generator=gen(),
                    output_type="np").images
    code = torch.cat(code_of(load_codes(world.sdxl_tokens), o.w), dim=-1)
    with torch.no_grad():
        for j, proj in enumerate(xl_m2.m2_encoder.projectors):
            proj[-1].weight.zero_()
            proj[-1].bias.copy_(code[j])
    by_encoder = xl_m2(PLAIN_PROMPT, identity=xl_m2.face_encoder.from_aligned(world.input_view(o.name)[None]),
                       generator=gen(), output_type="np").images
    np.testing.assert_allclose(by_encoder, by_code, atol=1e-5)


def test_each_code_draws_the_identity_it_was_trained_on(world, tmp_path, analyzer):
    """Trained for seconds on four anchors, each model's drawing from an anchor's true code is nearer (in pixels)
    to that anchor's training views than to any other anchor's, for at least three of the four: the code, not the
    seed, decides who is drawn (a model that ignored its code draws one picture for all four: one right at most)."""
    from facegen.cluster.world.experiment import PLAIN_PROMPT, Evaluator, LearnConfig, write_preset

    cfg = LearnConfig(world=TINY_WORLD, samples=2, steps=10)
    preset = write_preset(world, tmp_path, cfg, GUIDANCE)
    ev = Evaluator(world, preset, analyzer, cfg)
    train = world.split("train")
    means = np.stack([world.at_size(world.training_views(o.name)).astype(np.float32).mean(axis=0) for o in train])
    for method in ("dreamidentity", "faceclip", "dreamidentity-sdxl"):
        drawn = ev.draw(ev.pipeline(method, code=True), ev.code_identities(method, [o.w for o in train]), PLAIN_PROMPT)
        dist = ((drawn.astype(np.float32).mean(axis=1)[:, None] - means[None]) ** 2).mean(axis=(2, 3, 4))
        assert (dist.argmin(axis=1) == np.arange(len(train))).sum() >= 3, (method, dist.round(0))


def test_base_models_are_built_once(world, analyzer):
    again = build_world(analyzer, None, TINY_WORLD, log=lambda msg: pytest.fail(f"rebuilt: {msg}"))
    assert (again.sd21, again.sdxl_tokens) == (world.sd21, world.sdxl_tokens)


def test_bad_photo_folders_are_one_clear_error(analyzer, tmp_path, photos):
    with pytest.raises(WorldError, match="holds no photos"):
        find_people(analyzer, tmp_path, 0)
    with pytest.raises(WorldError, match="no such folder"):
        find_people(analyzer, tmp_path / "missing", 0)
    shutil.copy(photos["astronaut"], tmp_path / "a.png")
    with pytest.raises(WorldError, match="at least two people"):
        find_people(analyzer, tmp_path, 0)
    shutil.copy(photos["no_face"], tmp_path / "b.jpg")
    with pytest.raises(WorldError, match="no face"):
        find_people(analyzer, tmp_path, 0)
    (tmp_path / "b.jpg").unlink()
    person = tmp_path / "hanks"
    person.mkdir()
    shutil.copy(photos["tom_hanks"], person / "1.png")
    PIL.Image.open(photos["tom_hanks"]).transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT).save(person / "2.png")
    people = find_people(analyzer, tmp_path, 0)
    assert len(people) == 2 and len(people[1].photos) == 2  # a folder is one person, each photo a source


def test_demo_shows_the_worlds_pictures_once_learn_has_run(tmp_path, capsys):
    import json

    from facegen.cluster.demo import show_learn

    bench, out = tmp_path / "bench", tmp_path / "demo"
    bench.mkdir()
    out.mkdir()
    show_learn(out, bench)
    assert "make learn" in capsys.readouterr().out and not (out / "learn_grid.png").exists()
    cond = {"identification": 0.7, "ci95": [0.55, 0.82], "face_sim": 0.3, "mean_rank": 1.6}
    group = {c: cond for c in ("fresh", "trained", "ceiling", "lookup", "zeroed", "shuffled")}
    record = {"identities": {"anchors": 13, "train": 300, "validation": 20, "held_out": 24},
              "chance": {"held_in": 0.04, "held_out": 0.04},
              "dreamidentity": {"held_in": group, "held_out": {**group, "beyond_lookup": {
                  "difference": 0.1, "ci95": [0.02, 0.2], "closer_than_nearest_train": 0.6}}}}
    (bench / "learn.json").write_text(json.dumps(record))
    PIL.Image.new("RGB", (8, 8)).save(bench / "learn_grid.png")
    show_learn(out, bench)
    printed = capsys.readouterr().out
    assert (out / "learn_grid.png").is_file() and "dreamidentity" in printed and "0.70 [0.55, 0.82]" in printed
    assert "24 held-out" in printed

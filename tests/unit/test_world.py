"""The miniature world's plumbing (bench/learn.py measures the learning itself): its people, views, scoring, base
models in the diffusers layout, the preset that points the pipelines at them, and its errors."""
import dataclasses
import shutil

import numpy as np
import PIL.Image
import pytest
from facegen.cluster.world.build import build_world
from facegen.cluster.world.config import WorldConfig
from facegen.cluster.world.people import WorldError, colourfulness, find_people, grayscale, views
from facegen.cluster.world.score import edit_threshold, score_images, summarize

TINY_WORLD = WorldConfig(identities=3, held_out=1, views=3, vae_steps=2, base_steps=2, batch_size=2)


@pytest.fixture(scope="module")
def world(analyzer, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("FACEGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
    return build_world(analyzer, None, TINY_WORLD, log=lambda _: None)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as m:
        yield m


def test_shipped_photos_give_distinct_named_people(analyzer):
    people = find_people(analyzer, None, 0)
    assert len(people) >= 10  # the astronaut, t1.jpg's six, Tom Hanks, Grace Hopper, Yao Ming, ...
    names = [p.name for p in people]
    assert len(set(names)) == len(names) and all(names)
    e = np.stack([p.embedding for p in people])
    sims = e @ e.T - np.eye(len(people))
    assert sims.max() < 0.4  # one entry per person (Yao Ming is in two of the photos)


def test_views_are_seeded_aligned_and_varied(analyzer):
    person = find_people(analyzer, None, 1)[0]
    a, b = views(person, 4, 112, seed=0), views(person, 4, 112, seed=0)
    assert a.shape == (4, 112, 112, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[1], a[2])
    # every view is still this person to the recognizer, the plain one most of all
    e = analyzer.embed_aligned(list(a))
    assert (e[1:] @ e[0]).min() > 0.4


def test_edit_statistic_tells_black_and_white(analyzer):
    person = find_people(analyzer, None, 1)[0]
    colour = views(person, 4, 64, seed=0)
    grey = grayscale(colour)
    threshold = edit_threshold(colour)
    assert (colourfulness(grey) < threshold).all() and (colourfulness(colour) > threshold).all()


def test_scoring_identifies_the_references(world, analyzer):
    threshold = edit_threshold(world.at_size(world.views[world.names[0]]))
    rows = [score_images(analyzer, world.at_size(world.eval_view(n)[None]), i, world.references, threshold)
            for i, n in enumerate(world.names)]
    s = summarize(rows, edited=False)
    assert s["identification"] == 1.0 and s["face_sim"] > 0.5 and s["images"] == len(world.names)
    # a drawing of someone else is not identified as this person
    wrong = score_images(analyzer, world.at_size(world.eval_view(world.names[1])[None]), 0, world.references, threshold)
    assert wrong["identified"] == [False]


def test_world_base_models_load_through_the_real_paths(world, tmp_path, analyzer):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from facegen.cluster.world.experiment import LearnConfig, write_job_inputs, write_preset

    assert world.held_out == [world.names[-1]] and len(world.held_in) == 2
    sd = StableDiffusionPipeline.from_pretrained(world.sd21)
    assert sd.vae.config.latent_channels == 16 and sd.unet.config.in_channels == 16
    xl = StableDiffusionXLPipeline.from_pretrained(world.sdxl)
    assert xl.vae.config.scaling_factor == sd.vae.config.scaling_factor  # one VAE for both
    cfg = dataclasses.replace(LearnConfig(world=TINY_WORLD), samples=1, steps=2)
    preset = write_preset(world, tmp_path, cfg)
    photos, names = write_job_inputs(world, tmp_path)
    assert names.read_text().split() == world.held_in
    assert sorted(p.name for p in photos.iterdir()) == sorted(world.held_in)
    assert len(list((photos / world.held_in[0]).iterdir())) == TINY_WORLD.views - 1  # never the evaluation view
    from facegen.cluster.world.experiment import PLAIN_PROMPT, Evaluator

    ev = Evaluator(world, preset, analyzer, cfg)
    for method in ("dreamidentity", "faceclip"):
        pipe = ev.pipeline(method, None)
        assert str(world.sd21 if method == "dreamidentity" else world.sdxl) in str(pipe.unet.config._name_or_path)
        drawn = ev.draw_encoder(pipe, world.names[:1], prompts=(PLAIN_PROMPT,))
        assert drawn[PLAIN_PROMPT][world.names[0]].shape == (1, 64, 64, 3)


def test_base_models_are_built_once(world, analyzer):
    again = build_world(analyzer, None, TINY_WORLD, log=lambda msg: pytest.fail(f"rebuilt: {msg}"))
    assert again.sd21 == world.sd21


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
    group = {"identification": 0.9, "face_sim": 0.2, "face_sim_fresh": 0.0, "face_sim_ceiling": 0.25, "edit_obeyed": 1.0}
    (bench / "learn.json").write_text(json.dumps({"identities": 10, "chance": 0.1, "dreamidentity": {"held_in": group}}))
    PIL.Image.new("RGB", (8, 8)).save(bench / "learn_grid.png")
    show_learn(out, bench)
    printed = capsys.readouterr().out
    assert (out / "learn_grid.png").is_file() and "dreamidentity" in printed and "identification 0.90" in printed

"""Tier 1: the procedural world is deterministic and its texts say what the pictures show."""

from __future__ import annotations

import random

import numpy as np

from videococa.synthetic.world import (
    CLASS_NAMES, COLOURS, SHAPES, SIZES, Obj, Scene, VideoSpec, caption, image_sample, image_sample_with_scene,
    questions, random_scene, render, shape_coverage, video_spec,
)


def test_world_is_big_enough():
    assert len(SHAPES) >= 6 and len(COLOURS) >= 8 and len(SIZES) >= 3
    assert len(CLASS_NAMES) == len(SHAPES) * len(COLOURS)


def test_samples_are_deterministic():
    a_img, a_txt = image_sample(123)
    b_img, b_txt = image_sample(123)
    c_img, _ = image_sample(124)
    assert np.array_equal(a_img, b_img) and a_txt == b_txt
    assert not np.array_equal(a_img, c_img)


def test_render_puts_the_colour_where_the_object_is():
    scene = Scene([Obj("square", "red", "large", 0.5, 0.5)], "plain", (128, 128, 128))
    img = render(scene, 64)
    assert tuple(img[32, 32]) == COLOURS["red"]
    assert tuple(img[2, 2]) == (128, 128, 128)


def test_captions_and_questions_name_the_objects():
    rng = random.Random(0)
    for _ in range(50):
        scene = random_scene(rng)
        text = caption(scene, rng)
        for obj in scene.objects:
            assert obj.colour in text and obj.shape in text
        qa = dict(questions(scene))
        assert qa["how many shapes are there?"] == ["zero", "one", "two", "three"][len(scene.objects)]
        for obj in scene.objects:
            assert qa[f"what colour is the {obj.shape}?"] == obj.colour


def test_a_shape_question_names_one_object():
    """'what shape is the red object?' is asked only of scenes with one red object."""
    rng, asked, shared = random.Random(1), 0, 0
    for _ in range(400):
        scene = random_scene(rng)
        colours = [o.colour for o in scene.objects]
        shared += len(set(colours)) < len(colours)
        qs = [q for q, _ in questions(scene) if q.startswith("what shape")]
        assert sorted(qs) == sorted(f"what shape is the {c} object?" for c in colours if colours.count(c) == 1)
        asked += len(qs)
    assert shared > 0 and asked > 0  # the sample holds scenes with a shared colour, and questions are still asked


def test_shape_coverage_marks_the_patches_each_shape_covers():
    # a large square (radius 0.21 of 64 px: 9.5 px from centre to side) centred at (16, 16), on a plain background
    square = Obj("square", "red", "large", 0.25, 0.25)
    scene = Scene([square, Obj("circle", "blue", "small", 0.75, 0.75)], "plain", (128, 128, 128))
    cov = shape_coverage(scene, 64, 8)
    assert cov.shape == (1 + len(SHAPES), 8, 8) and cov.dtype == np.float32
    np.testing.assert_allclose(cov.sum(0), 1.0, atol=1e-6)
    sq, ci = 1 + SHAPES.index("square"), 1 + SHAPES.index("circle")
    # patches (1,1),(1,2),(2,1),(2,2) span pixels 8..24: wholly inside the square (sides at 16 +- 9.5)
    np.testing.assert_allclose(cov[sq, 1:3, 1:3], 1.0)
    # areas in patch units (64 px each), within PIL's pixel rounding of the outlines
    assert abs(cov[sq].sum() - (2 * 0.21 * 64 / 2 ** 0.5) ** 2 / 64) < 0.12 * cov[sq].sum()
    assert abs(cov[ci].sum() - np.pi * (0.09 * 64) ** 2 / 64) < 0.12 * cov[ci].sum()
    assert cov[ci, 5:7, 5:7].min() > 0.3 and cov[ci, :4].max() == 0  # the circle sits at (48, 48)
    assert cov[0, 0, 7] == 1.0 and cov[1:, 0, 7].sum() == 0  # a far corner is background only
    # the same pixels render paints: per patch, the share of red in the rendered square matches its coverage
    alone = render(Scene([square], "plain", (128, 128, 128)), 64).astype(np.float32)
    red = (alone[..., 0] - 128) / (COLOURS["red"][0] - 128)  # (64, 64): 1 inside, 0 outside, between on edges
    per_patch = red.reshape(8, 8, 8, 8).mean((1, 3))  # (8, 8)
    np.testing.assert_allclose(per_patch, cov[sq], atol=0.03)


def test_sample_with_scene_is_the_sample_and_its_scene():
    for seed in range(20):
        img, text = image_sample(seed)
        img2, text2, scene = image_sample_with_scene(seed)
        assert np.array_equal(img, img2) and text == text2
        assert all(o.colour in text or o.shape in text or text.startswith("question:") for o in scene.objects)
        assert scene == random_scene(random.Random(seed))


def test_relations_follow_positions():
    scene = Scene([Obj("circle", "red", "small", 0.5, 0.2), Obj("square", "blue", "small", 0.5, 0.8)], "plain",
                  (128, 128, 128))
    texts = {caption(scene, random.Random(s)) for s in range(40)}
    assert any("red circle above a" in t for t in texts)
    assert not any("below" in t for t in texts)


def test_late_video_is_empty_at_first_and_shows_the_object_later():
    spec = VideoSpec(1, Obj("star", "yellow", "large", 0.5, 0.5), "left", "plain", (128, 128, 128), appears_at=0.6)
    frames = spec.render_frames(8, 64)
    yellow = np.array(COLOURS["yellow"])
    has = [bool((np.abs(f.astype(int) - yellow).sum(-1) < 30).any()) for f in frames]
    assert has == [False] * 5 + [True] * 3
    assert ("what colour is the star?", "yellow", "late") in spec.questions()
    assert spec.label == "yellow star"


def test_motion_direction_matches_answer():
    for seed in range(20):
        spec = video_spec(seed, late_share=0.0)
        first, last = spec.frame_scene(0.0)[0].objects[0], spec.frame_scene(1.0)[0].objects[0]
        dx, dy = last.x - first.x, last.y - first.y
        expected = {"left": dx < 0, "right": dx > 0, "up": dy < 0, "down": dy > 0}[spec.direction]
        assert expected
        assert (f"which way does the {spec.obj.shape} move?", spec.direction, "motion") in spec.questions()


def test_hard_negative_scenes_share_colour_and_background_and_keep_the_other_draws():
    for seed in range(30):
        free = random_scene(random.Random(seed))
        fixed = random_scene(random.Random(seed), colour="green", background=("striped", (100, 115, 130)))
        assert all(o.colour == "green" for o in fixed.objects)
        assert (fixed.background, fixed.tone) == ("striped", (100, 115, 130))
        strip = lambda s: [(o.shape, o.size, o.x, o.y, o.angle) for o in s.objects]  # noqa: E731
        assert strip(fixed) == strip(free)
    img, text = image_sample(5, colour="blue", background=("plain", (128, 128, 128)), qa_share=0.0)
    assert "blue" in text and not any(c in text.split() for c in COLOURS if c != "blue")


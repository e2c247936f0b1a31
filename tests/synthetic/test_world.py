"""Tier 1: the procedural world is deterministic and its texts say what the pictures show."""

from __future__ import annotations

import random

import numpy as np

from videococa.synthetic.world import (
    CLASS_NAMES, COLOURS, SHAPES, SIZES, Obj, Scene, VideoSpec, caption, image_sample, questions, random_scene,
    render, video_spec,
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


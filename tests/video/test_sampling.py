"""Tier 1: sampling times on hand-computed cases."""

import pytest

from videococa.video import clip_windows, random_times, sliding_windows, uniform_times


def test_uniform_times_are_segment_centres():
    assert uniform_times(4, 0.0, 8.0) == [1.0, 3.0, 5.0, 7.0]
    assert uniform_times(1, 2.0, 4.0) == [3.0]
    assert uniform_times(2, 10.0, 11.0) == [10.25, 10.75]


def test_random_times_are_seeded_and_inside_their_segments():
    a = random_times(8, 0.0, 16.0, seed=3)
    assert a == random_times(8, 0.0, 16.0, seed=3)
    assert a != random_times(8, 0.0, 16.0, seed=4)
    for k, t in enumerate(a):
        assert 2 * k <= t < 2 * (k + 1)


def test_clip_windows():
    assert clip_windows(10.0, num_clips=4) == [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5), (7.5, 10.0)]
    assert clip_windows(10.0, segment=4.0) == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    assert clip_windows(8.0, segment=4.0) == [(0.0, 4.0), (4.0, 8.0)]
    assert clip_windows(1.5, segment=4.0) == [(0.0, 1.5)]
    with pytest.raises(ValueError, match="exactly one of num_clips and segment"):
        clip_windows(10.0)
    with pytest.raises(ValueError, match="segment must be a number of seconds from 0.1 to 86400, got -1"):
        clip_windows(10.0, segment=-1)
    with pytest.raises(ValueError, match="num_clips must be a positive integer, got 0"):
        clip_windows(10.0, num_clips=0)


def test_sliding_windows_at_several_scales():
    w = sliding_windows(8.0, scales=(0.25,), stride=0.5)
    assert w == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0), (4.0, 6.0), (5.0, 7.0), (6.0, 8.0)]
    assert sliding_windows(10.0, scales=(0.3,)) == [(0.0, 3.0), (1.5, 4.5), (3.0, 6.0), (4.5, 7.5), (6.0, 9.0),
                                                    (7.0, 10.0)]  # the last one flush with the end
    assert len(sliding_windows(8.0)) == 15 + 7 + 5 + 3 and sliding_windows(8.0, scales=(1.0,)) == [(0.0, 8.0)]
    with pytest.raises(ValueError, match="scales must be shares of the video in"):
        sliding_windows(8.0, scales=(0.0,))
    with pytest.raises(ValueError, match="stride must be a share"):
        sliding_windows(8.0, stride=1.5)

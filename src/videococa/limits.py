"""Bounds on user-given numbers, in one light module (the CLI checks them before loading anything heavy)."""

MAX_FRAMES = 64
"""Frames per video the model takes (its temporal tables have this many rows)."""
MAX_READ_FRAMES = 256
"""Most frames one clip may sample when read: the frames of a clip are held in memory together (at 224 px, 0.6 MB each)."""
MAX_SEGMENT = 86_400.0
"""Longest window (seconds) a video may be cut into: one day."""
CHUNK_FRAMES = 128
"""Frames decoded together when a long video is read window by window: bounds memory per file being read."""

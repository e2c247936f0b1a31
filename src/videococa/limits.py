"""Bounds on user-given numbers, in one light module (the CLI checks them before loading anything heavy)."""

MAX_FRAMES = 64
"""Frames per video the model takes (its temporal tables have this many rows)."""
MAX_READ_FRAMES = 256
"""Most frames one clip may sample when read: the frames of a clip are held in memory together (at 224 px, 0.6 MB each)."""
MAX_SEGMENT = 86_400.0
"""Longest window (seconds) a video may be cut into: one day."""
MIN_SEGMENT = 0.1
"""Shortest window (seconds): below a few frames a window says nothing more, and the count explodes."""
MAX_WINDOWS = 1_000_000
"""Most windows one file may be cut into (a day at 0.1 s is 864,000); more means a corrupt stated duration."""
MAX_BATCH_FRAMES = 4096
"""Most frames one batch may hold (batch size x frames per clip): 2.4 GB at 224 px."""
CHUNK_FRAMES = 128
"""Frames decoded together when a long video is read window by window: bounds memory per file being read."""

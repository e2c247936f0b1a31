"""The local backend: today's path, threads in this process (`tasks.batch.encode_files`, `tasks.embed`)."""

from __future__ import annotations

import os
from typing import Iterator, Sequence

from ..models.videococa import VideoCoCa
from ..tasks.batch import EncodedClip, encode_files
from ..tasks.clipkeys import encode_clip_keys
from ..tasks.embed import EmbedReport, embed_to_parquet
from ..video.loader import FileIssue


class LocalBackend:
    """Reading threads overlapped with the model in this process; nothing to start or stop."""

    name = "local"

    def encode_files(self, model: VideoCoCa, paths: Sequence[str | os.PathLike],
                     **kwargs) -> Iterator[list[EncodedClip] | FileIssue]:
        """`tasks.batch.encode_files`: each file's results (or its FileIssue), in input order."""
        return encode_files(model, paths, **kwargs)

    encode_clip_keys = staticmethod(encode_clip_keys)
    """`tasks.clipkeys.encode_clip_keys`: clips of annotation items (eval, cache-features), reading threads here."""

    def embed(self, model: VideoCoCa, paths: Sequence[str | os.PathLike], out: str | os.PathLike,
              **kwargs) -> EmbedReport:
        """`tasks.embed.embed_to_parquet`: one Parquet file, resumable from OUT.partial."""
        return embed_to_parquet(model, paths, out, **kwargs)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> "LocalBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

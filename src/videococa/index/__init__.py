"""The persistent video index: FAISS vectors + SQLite metadata."""

from .store import EXACT_LIMIT, SearchHit, UpdateReport, VideoIndex, build_faiss

__all__ = ["EXACT_LIMIT", "SearchHit", "UpdateReport", "VideoIndex", "build_faiss"]

"""The persistent video index: FAISS vectors + SQLite metadata."""

from .store import EXACT_LIMIT, RepairReport, SearchHit, UpdateReport, VideoIndex, build_faiss

__all__ = ["EXACT_LIMIT", "RepairReport", "SearchHit", "UpdateReport", "VideoIndex", "build_faiss"]

"""Old spellings that keep working for a while: a renamed keyword or attribute, with a DeprecationWarning.

The one place that knows how a rename is kept compatible, so every renamed function behaves alike: the old
keyword is passed on under its new name with a warning, and giving both is a TypeError.
"""

from __future__ import annotations

import functools
import warnings


def _shown(func) -> str:
    name = func.__qualname__
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def renamed_keywords(**old_to_new: str):
    """Decorator: each old keyword (`frames="num_frames"`) is accepted as its new name, with a DeprecationWarning
    pointing at the caller; a call giving both the old and the new name raises TypeError."""

    def wrap(func):
        @functools.wraps(func)
        def call(*args, **kwargs):
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{_shown(func)}() got both {old}= and {new}=; {old}= is the old name of "
                                    f"{new}=, give only {new}=")
                warnings.warn(f"{_shown(func)}({old}=...) is deprecated; use {new}= instead",
                              DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return call

    return wrap


def renamed_attribute(old: str, new: str) -> property:
    """A read-only property `old` that returns attribute `new`, with a DeprecationWarning."""

    def get(self):
        warnings.warn(f"{type(self).__name__}.{old} is deprecated; use .{new} instead", DeprecationWarning,
                      stacklevel=2)
        return getattr(self, new)

    return property(get, doc=f"Deprecated name of `{new}`.")

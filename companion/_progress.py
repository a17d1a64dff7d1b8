"""When a progress bar is shown: asked for, and not switched off for the run.

``TQDM_DISABLE=1`` is how a Quarto render (the project's ``_environment``)
switches every bar off: tqdm reads it as the default of ``disable``, but an
explicit ``disable=`` argument overrides that default, so the package's own
bars consult it here.
"""

from __future__ import annotations

import os

_FALSE = {"", "0", "false", "no", "off"}


def bar_disabled(progress_bar: bool) -> bool:
    """True when a bar asked for with ``progress_bar`` must not be shown."""
    return (
        not progress_bar
        or os.environ.get("TQDM_DISABLE", "").strip().lower() not in _FALSE
    )

"""Whether this interpreter has torch and Lightning, for the ``torch`` marker (see noxfile.py).

torch has a CPU wheel for one Python only on the machines we test on, so the suite runs in two shapes: the full
suite on 3.11, and the torch-free sessions (3.10, 3.12, 3.13), where tests marked ``torch`` skip with
``NO_TORCH_REASON``. A test module whose own imports need torch calls
``pytest.importorskip("lightning", reason=NO_TORCH_REASON)`` before them instead. With
``LIGHTNING_STREAM_REQUIRE_TORCH=1`` (``make test`` sets it) a missing torch fails the run rather than skips.
"""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec

ENV_REQUIRE = "LIGHTNING_STREAM_REQUIRE_TORCH"
HAS_TORCH = find_spec("torch") is not None and find_spec("lightning") is not None
_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
NO_TORCH_REASON = (
    f"needs torch and Lightning, which are not installed for Python {_PYTHON} (a torch-free session: "
    f"nox -s torchfree-{_PYTHON}); the full suite runs on 3.11 (make test, or nox -s full-3.11)"
)


def torch_required() -> bool:
    """Whether a missing torch must fail the run (``LIGHTNING_STREAM_REQUIRE_TORCH=1``) instead of skipping."""
    return os.environ.get(ENV_REQUIRE, "") not in ("", "0")

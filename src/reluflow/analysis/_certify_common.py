"""What both certifiers (``_certify`` for exact1d, ``_certify_gaussian``) share: a refusal row and the radii
Krawczyk's test is tried at."""

from __future__ import annotations

from typing import Any


def refuse(reason: str, detail: str, **extra: float) -> dict[str, Any]:
    """A row that is not certified: class ``none``, why (``CERTIFY_REASONS``) and the detail."""
    return {"certified_class": "none", "certified_reason": reason, "certified_detail": detail, **extra}


def radius_ladder(step: float, scale: float, max_radius: float, radius: float | None) -> list[float]:
    """Box radii to try, smallest first: ``radius`` if given, else from four Newton corrections (``step``; at least
    ``2^-40 * scale``) up by factors of 8, at most 8 of them and none above ``max_radius * scale``. Empty: the
    Newton correction alone is too large for any allowed box."""
    if radius is not None:
        return [float(radius)]
    limit = max_radius * scale
    r = max(4.0 * step, 2.0**-40 * scale)
    radii = []
    while r <= limit and len(radii) < 8:
        radii.append(r)
        r *= 8.0
    return radii

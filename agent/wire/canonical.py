"""The one JSON form used on the wire and under signatures.

``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
encoded as UTF-8: keys sorted, no whitespace, non-ASCII text as UTF-8 bytes,
floats as Python's shortest round-trip ``repr``, no NaN or Infinity. A signature
covers these exact bytes, so a signer in another language must reproduce them
(integers and strings are trivial; prefer them to floats in signed documents).
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """The canonical bytes of a JSON-ready value (raises ValueError on NaN/Infinity).

    Text that cannot be UTF-8 (lone surrogates, e.g. from an undecodable file
    name in an error message) is replaced by ``?``, so an event always encodes.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return text.encode("utf-8", errors="replace")

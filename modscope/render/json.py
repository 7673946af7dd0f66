"""JSON output: every report's ``to_dict()`` as one document on stdout (schemas in docs/json.md)."""
from __future__ import annotations

import json
import math
from typing import Any


def dumps(report: Any) -> str:
    """The report as JSON; non-finite floats become the strings "nan"/"inf"/"-inf" so output stays valid JSON."""
    data = report.to_dict() if hasattr(report, "to_dict") else report
    return json.dumps(_finite(data), indent=2, sort_keys=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def jsonable(report: Any) -> Any:
    """The data ``dumps`` writes, before it is written (the HTML report embeds the same documents)."""
    return _finite(report.to_dict() if hasattr(report, "to_dict") else report)

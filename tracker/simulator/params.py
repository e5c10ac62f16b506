"""What the simulated API accepts: request parameter checks and cursor paging, with the real API's messages.

Paging follows the API's cursor rules: items are ordered by ``created_at`` then id (ascending or, by
default, descending); ``after`` and ``before`` are ids of items in that list, and the page holds the
``limit`` items right after ``after`` or right before ``before``; ``has_more`` says whether the list goes on
past the page in the direction of travel. A cursor that names no item of the list is a 400.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tracker.simulator.errors import BadRequest

ORDERS = ("asc", "desc")


def check_paging(limit: object, order: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise BadRequest(f"Invalid 'limit': integer between 1 and 100 expected, got {limit!r}.", param="limit")
    if order not in ORDERS:
        raise BadRequest(f"Invalid 'order': expected one of 'asc' or 'desc', got {order!r}.", param="order")


def page(
    ascending_ids: Sequence[str], *, limit: int, order: str, after: str | None, before: str | None
) -> tuple[list[str], bool]:
    """The ids on the requested page and whether more lie beyond it."""
    ids = list(ascending_ids) if order == "asc" else list(reversed(ascending_ids))
    start = _position(ids, after, "after") + 1 if after is not None else 0
    stop = _position(ids, before, "before") if before is not None else len(ids)
    window = ids[start:stop]
    if before is not None and after is None:
        return window[-limit:], len(window) > limit
    return window[:limit], len(window) > limit


def _position(ids: list[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise BadRequest(f"Invalid '{param}': no object with id '{cursor}' in this list.", param=param) from None


def unknown_parameter(parameters: Mapping[str, object], known: Collection[str]) -> None:
    """Refuses the first parameter (alphabetically) the endpoint does not know, as the API does."""
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise BadRequest(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])


def checked_metadata(metadata: object) -> dict[str, str]:
    """At most 16 string pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or len(metadata) > 16:
        raise BadRequest("Invalid 'metadata': expected an object with at most 16 keys.", param="metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str) or len(key) > 64 or len(value) > 512:
            raise BadRequest(
                "Invalid 'metadata': keys are strings of at most 64 characters, values strings of at most 512.",
                param="metadata",
            )
    return dict(metadata)


def checked_tools(tools: object, default: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tools of the three kinds runs know; a function tool needs a name."""
    if tools is None:
        return [copy.deepcopy(dict(tool)) for tool in default]
    if not isinstance(tools, list | tuple):
        raise BadRequest("Invalid 'tools': expected an array.", param="tools")
    checked = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") not in ("code_interpreter", "file_search", "function"):
            raise BadRequest(f"Invalid value for 'tools[{index}].type'.", param=f"tools[{index}].type")
        function = tool.get("function")
        if tool["type"] == "function" and not (isinstance(function, Mapping) and isinstance(function.get("name"), str)):
            raise BadRequest(f"Missing required parameter: 'tools[{index}].function.name'.", param=f"tools[{index}]")
        checked.append(copy.deepcopy(dict(tool)))
    return checked


def checked_outputs(tool_outputs: object) -> dict[str, str]:
    """Tool call id -> output, from ``[{"tool_call_id": ..., "output": ...}, ...]``."""
    if not isinstance(tool_outputs, list | tuple):
        raise BadRequest("Missing required parameter: 'tool_outputs'.", param="tool_outputs")
    outputs: dict[str, str] = {}
    for index, item in enumerate(tool_outputs):
        call_id = item.get("tool_call_id") if isinstance(item, Mapping) else None
        output = item.get("output", "") if isinstance(item, Mapping) else None
        if not isinstance(call_id, str) or not isinstance(output, str):
            raise BadRequest(
                f"Invalid 'tool_outputs[{index}]': expected tool_call_id and output strings.", param="tool_outputs"
            )
        outputs[call_id] = output
    return outputs

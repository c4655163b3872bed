"""``spreadsheets.batchUpdate``: the structural requests and the all-or-nothing runner.

Requests on cells and properties live in :mod:`sheetops.testing.emulator_store`; this
module adds what changes a sheet's shape or its side tables, as Google answers them:
merges, inserted/deleted rows and columns, named and protected ranges, sorting,
copy/cut-paste, the basic filter and row/column groups.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable
from typing import Any

from sheetops.testing.a1 import Bounds
from sheetops.testing.emulator_store import (
    REQUESTS as CELL_REQUESTS,
)
from sheetops.testing.emulator_store import (
    ApiError,
    Cell,
    Sheet,
    Spreadsheet,
    grid_bounds,
    is_blank,
)

Handler = Callable[[Spreadsheet, dict[str, Any]], dict[str, Any]]


def _closed(sheet: Sheet, b: Bounds) -> Bounds:
    return b.clip(sheet.rows, sheet.cols)


def _overlaps(a: Bounds, b: Bounds) -> bool:
    return a.row0 < b.row1 and b.row0 < a.row1 and a.col0 < b.col1 and b.col0 < a.col1


def _inside(a: Bounds, b: Bounds) -> bool:
    return b.row0 <= a.row0 and a.row1 <= b.row1 and b.col0 <= a.col0 and a.col1 <= b.col1


# --------------------------------------------------------------------------- merges

def _merge_cells(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    """Merge a range (or each of its rows/columns); only the top-left value survives."""
    sheet, b = grid_bounds(ss, body.get("range", {}))
    b = _closed(sheet, b)
    kind = body.get("mergeType", "MERGE_ALL")
    if kind == "MERGE_ALL":
        parts = [b]
    elif kind == "MERGE_COLUMNS":
        parts = [Bounds(b.row0, c, b.row1, c + 1) for c in range(b.col0, b.col1)]
    elif kind == "MERGE_ROWS":
        parts = [Bounds(r, b.col0, r + 1, b.col1) for r in range(b.row0, b.row1)]
    else:
        raise ApiError(400, f"Invalid value at 'mergeType': {kind}")
    if any(_overlaps(m, b) and not _inside(m, b) for m in sheet.merges):
        raise ApiError(400, "You can't merge cells that partially overlap an existing "
                            "merge; unmerge them first.")
    sheet.merges = [m for m in sheet.merges if not _inside(m, b)]  # a bigger merge wins
    for part in parts:
        if (part.row1 - part.row0) * (part.col1 - part.col0) < 2:
            continue
        for key in [k for k in sheet.cells if part.row0 <= k[0] < part.row1
                    and part.col0 <= k[1] < part.col1 and k != (part.row0, part.col0)]:
            del sheet.cells[key]
        sheet.merges.append(part)
    return {}


def _unmerge_cells(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    sheet, b = grid_bounds(ss, body.get("range", {}))
    b = _closed(sheet, b)
    sheet.merges = [m for m in sheet.merges if not _overlaps(m, b)]
    return {}


# --------------------------------------------------------------------------- dimensions

def _dimension(body: dict[str, Any], ss: Spreadsheet) -> tuple[Sheet, bool, int, int]:
    rng = body.get("range", {})
    sheet = ss.sheet_by_id(rng.get("sheetId", 0))
    dim = rng.get("dimension")
    if dim not in ("ROWS", "COLUMNS"):
        raise ApiError(400, "range.dimension must be ROWS or COLUMNS")
    start, end = int(rng.get("startIndex", 0)), rng.get("endIndex")
    rows = dim == "ROWS"
    end = int(end) if end is not None else (sheet.rows if rows else sheet.cols)
    if end <= start:
        raise ApiError(400, "endIndex must be greater than startIndex.")
    return sheet, rows, start, end


def _shift_bounds(b: Bounds, rows: bool, at: int, by: int) -> Bounds | None:
    """``b`` after ``by`` rows/columns are inserted (``by > 0``) or deleted at ``at``;
    ``None`` when it is deleted entirely."""
    lo, hi = (b.row0, b.row1) if rows else (b.col0, b.col1)
    if by > 0:
        lo = lo + by if lo >= at else lo
        hi = hi + by if hi is not None and hi > at else hi
    else:
        gone = -by
        def moved(i: int) -> int:
            return i if i <= at else max(at, i - gone)
        lo = moved(lo) if lo < at else (lo - gone if lo >= at + gone else at)
        hi = None if hi is None else moved(hi)
        if hi is not None and hi <= lo:
            return None
    return Bounds(lo, b.col0, hi, b.col1) if rows else Bounds(b.row0, lo, b.row1, hi)


def _shift(sheet: Sheet, rows: bool, at: int, by: int) -> None:
    cells: dict[tuple[int, int], Cell] = {}
    for (r, c), cell in sheet.cells.items():
        i = r if rows else c
        if by < 0 and at <= i < at - by:
            continue
        if i >= at:
            i += by
        cells[(i, c) if rows else (r, i)] = cell
    sheet.cells = cells
    sheet.merges = [m for m in (_shift_bounds(m, rows, at, by) for m in sheet.merges)
                    if m is not None]
    sheet.validations = [(nb, rule) for nb, rule in
                         ((_shift_bounds(b, rows, at, by), rule) for b, rule in sheet.validations)
                         if nb is not None]


def _insert_dimension(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    sheet, rows, start, end = _dimension(body, ss)
    if start > (sheet.rows if rows else sheet.cols):
        raise ApiError(400, f"startIndex {start} is past the end of the grid.")
    _shift(sheet, rows, start, end - start)
    if rows:
        sheet.rows += end - start
    else:
        sheet.cols += end - start
    return {}


def _delete_dimension(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    sheet, rows, start, end = _dimension(body, ss)
    size = sheet.rows if rows else sheet.cols
    end = min(end, size)
    if start == 0 and end >= size:
        raise ApiError(400, "You can't delete all the rows on the sheet." if rows
                       else "You can't delete all the columns on the sheet.")
    _shift(sheet, rows, start, start - end)
    if rows:
        sheet.rows -= end - start
        sheet.frozen_rows = min(sheet.frozen_rows, sheet.rows - 1)
    else:
        sheet.cols -= end - start
        sheet.frozen_cols = min(sheet.frozen_cols, sheet.cols - 1)
    return {}


# --------------------------------------------------------------------------- ranges

def _new_id() -> str:
    return str(secrets.randbelow(2**31 - 2) + 1)


def _add_named_range(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    named = copy.deepcopy(body.get("namedRange", {}))
    name = named.get("name", "")
    if not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise ApiError(400, f"Invalid name for a named range: {name!r}.")
    if any(nr["name"].casefold() == name.casefold() for nr in ss.named_ranges):
        raise ApiError(400, f'A named range with the name "{name}" already exists.')
    sheet, b = grid_bounds(ss, named.get("range", {}))
    named["range"] = sheet.grid_range(b)
    named.setdefault("namedRangeId", _new_id())
    ss.named_ranges.append(named)
    return {"addNamedRange": {"namedRange": copy.deepcopy(named)}}


def _delete_named_range(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    wanted = body.get("namedRangeId")
    kept = [nr for nr in ss.named_ranges if nr["namedRangeId"] != wanted]
    if len(kept) == len(ss.named_ranges):
        raise ApiError(400, f"No named range with id: {wanted}")
    ss.named_ranges = kept
    return {}


def _add_protected_range(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    prot = copy.deepcopy(body.get("protectedRange", {}))
    sheet, b = grid_bounds(ss, prot.get("range", {}))
    if prot.get("warningOnly") and prot.get("editors"):
        raise ApiError(400, "A warning-only protected range cannot have editors.")
    prot["range"] = sheet.grid_range(b)
    prot["protectedRangeId"] = int(_new_id())
    prot["requestingUserCanEdit"] = True
    if not prot.get("warningOnly"):
        prot.setdefault("editors", {})
    sheet.protected.append(prot)
    return {"addProtectedRange": {"protectedRange": copy.deepcopy(prot)}}


def _delete_protected_range(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    wanted = body.get("protectedRangeId")
    for sheet in ss.sheets:
        for prot in sheet.protected:
            if str(prot["protectedRangeId"]) == str(wanted):
                sheet.protected.remove(prot)
                return {}
    raise ApiError(400, f"No protected range with id: {wanted}")


# --------------------------------------------------------------------------- sorting, pasting

def _sort_key(cell: Cell | None) -> tuple[int, Any]:
    """Google's order: numbers, then text (case-insensitive), then booleans."""
    value = None if cell is None else cell.get("v")
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).casefold())


def _sort_range(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    """Sort the rows of a range; empty cells go last whichever the order."""
    sheet, b = grid_bounds(ss, body.get("range", {}))
    b = _closed(sheet, b)
    lines = [{c: sheet.cells[(r, c)] for c in range(b.col0, b.col1) if (r, c) in sheet.cells}
             for r in range(b.row0, b.row1)]
    for spec in reversed(body.get("sortSpecs", [])):
        col = int(spec.get("dimensionIndex", 0))
        descending = spec.get("sortOrder") == "DESCENDING"
        filled = [line for line in lines if not is_blank(line.get(col))
                  and line[col].get("v") not in (None, "")]
        empty = [line for line in lines if line not in filled]
        filled.sort(key=lambda line: _sort_key(line.get(col)), reverse=descending)
        lines = filled + empty
    for key in [k for k in sheet.cells if b.row0 <= k[0] < b.row1 and b.col0 <= k[1] < b.col1]:
        del sheet.cells[key]
    for i, line in enumerate(lines):
        for c, cell in line.items():
            sheet.cells[(b.row0 + i, c)] = cell
    return {}


_PASTE_KEYS = {"PASTE_NORMAL": None, "PASTE_VALUES": ("v", "f", "d"),
               "PASTE_FORMAT": ("fmt",), "PASTE_NO_BORDERS": None,
               "PASTE_FORMULA": ("v", "f", "d"), "PASTE_DATA_VALIDATION": (),
               "PASTE_CONDITIONAL_FORMATTING": ()}


def _pasted(old: Cell | None, new: Cell | None, paste_type: str) -> Cell | None:
    keys = _PASTE_KEYS.get(paste_type, ...)
    if keys is ...:
        raise ApiError(400, f"Invalid value at 'pasteType': {paste_type}")
    if keys is None:
        return dict(new) if new else None
    kept = {k: v for k, v in (old or {}).items() if k not in keys}
    taken = {k: v for k, v in (new or {}).items() if k in keys}
    return (kept | taken) or None


def _paste(src_sheet: Sheet, src: Bounds, dst_sheet: Sheet, row0: int, col0: int,
           paste_type: str) -> None:
    block = {(r - src.row0, c - src.col0): cell for (r, c), cell in src_sheet.cells.items()
             if src.row0 <= r < src.row1 and src.col0 <= c < src.col1}
    dst_sheet.check_within(Bounds(row0, col0, row0 + src.row1 - src.row0,
                                  col0 + src.col1 - src.col0), "destination ")
    for i in range(src.row1 - src.row0):
        for j in range(src.col1 - src.col0):
            key = (row0 + i, col0 + j)
            cell = _pasted(dst_sheet.cells.get(key), block.get((i, j)), paste_type)
            if cell is None or is_blank(cell):
                dst_sheet.cells.pop(key, None)
            else:
                dst_sheet.cells[key] = cell


def _copy_paste(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    """Paste the source at the destination, repeated to fill it when it is a multiple."""
    src_sheet, src = grid_bounds(ss, body.get("source", {}))
    dst_sheet, dst = grid_bounds(ss, body.get("destination", {}))
    src, dst = _closed(src_sheet, src), _closed(dst_sheet, dst)
    height, width = src.row1 - src.row0, src.col1 - src.col0
    times_down = max(1, (dst.row1 - dst.row0) // height)
    times_across = max(1, (dst.col1 - dst.col0) // width)
    kind = body.get("pasteType", "PASTE_NORMAL")
    for i in range(times_down):
        for j in range(times_across):
            _paste(src_sheet, src, dst_sheet, dst.row0 + i * height, dst.col0 + j * width, kind)
    return {}


def _cut_paste(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    """Move the source to the destination's top-left cell; the source is left empty."""
    src_sheet, src = grid_bounds(ss, body.get("source", {}))
    src = _closed(src_sheet, src)
    dest = body.get("destination", {})
    dst_sheet = ss.sheet_by_id(dest.get("sheetId", 0))
    moved = src_sheet.copy()
    for key in [k for k in src_sheet.cells if src.row0 <= k[0] < src.row1
                and src.col0 <= k[1] < src.col1]:
        del src_sheet.cells[key]
    _paste(moved, src, dst_sheet, int(dest.get("rowIndex", 0)), int(dest.get("columnIndex", 0)),
           body.get("pasteType", "PASTE_NORMAL"))
    return {}


# --------------------------------------------------------------------------- filter, groups

def _set_basic_filter(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(body.get("filter", {}))
    sheet, b = grid_bounds(ss, spec.get("range", {}))
    spec["range"] = sheet.grid_range(b)
    sheet.basic_filter = spec
    return {}


def _clear_basic_filter(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    ss.sheet_by_id(body.get("sheetId", 0)).basic_filter = None
    return {}


def _group_range(ss: Spreadsheet, body: dict[str, Any]) -> tuple[Sheet, str, dict[str, Any]]:
    sheet, rows, start, end = _dimension(body, ss)
    dim = "ROWS" if rows else "COLUMNS"
    return sheet, dim, {"sheetId": sheet.sheet_id, "dimension": dim,
                        "startIndex": start, "endIndex": end}


def _groups_reply(kind: str, sheet: Sheet, dim: str) -> dict[str, Any]:
    return {kind: {"dimensionGroups": copy.deepcopy(sheet.groups.get(dim, []))}}


def _add_dimension_group(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    """A group one deeper than the groups that contain it."""
    sheet, dim, rng = _group_range(ss, body)
    groups = sheet.groups.setdefault(dim, [])
    depth = 1 + sum(1 for g in groups if g["range"]["startIndex"] <= rng["startIndex"]
                    and rng["endIndex"] <= g["range"]["endIndex"])
    groups.append({"range": rng, "depth": depth, "collapsed": False})
    groups.sort(key=lambda g: (g["depth"], g["range"]["startIndex"]))
    return _groups_reply("addDimensionGroup", sheet, dim)


def _delete_dimension_group(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    sheet, dim, rng = _group_range(ss, body)
    groups = sheet.groups.get(dim, [])
    same = [g for g in groups if g["range"]["startIndex"] == rng["startIndex"]
            and g["range"]["endIndex"] == rng["endIndex"]]
    if not same:
        raise ApiError(400, "No group found over the given range.")
    groups.remove(max(same, key=lambda g: g["depth"]))
    return _groups_reply("deleteDimensionGroup", sheet, dim)


REQUESTS: dict[str, Handler] = CELL_REQUESTS | {
    "mergeCells": _merge_cells,
    "unmergeCells": _unmerge_cells,
    "insertDimension": _insert_dimension,
    "deleteDimension": _delete_dimension,
    "addNamedRange": _add_named_range,
    "deleteNamedRange": _delete_named_range,
    "addProtectedRange": _add_protected_range,
    "deleteProtectedRange": _delete_protected_range,
    "sortRange": _sort_range,
    "copyPaste": _copy_paste,
    "cutPaste": _cut_paste,
    "setBasicFilter": _set_basic_filter,
    "clearBasicFilter": _clear_basic_filter,
    "addDimensionGroup": _add_dimension_group,
    "deleteDimensionGroup": _delete_dimension_group,
}


def batch_update(ss: Spreadsheet, requests: Any) -> tuple[Spreadsheet, list[dict[str, Any]]]:
    """Apply ``requests`` to a copy of ``ss``: either all apply or none (a 400 names the
    first bad request, as Google's ``Invalid requests[i].kind: ...``)."""
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "Invalid JSON payload: 'requests' must be a non-empty list.")
    work = ss.copy()
    replies = []
    for i, request in enumerate(requests):
        if not isinstance(request, dict) or len(request) != 1:
            raise ApiError(400, f"Invalid requests[{i}]: exactly one request kind expected.")
        (kind, body), = request.items()
        handler = REQUESTS.get(kind)
        if handler is None:
            raise ApiError(400, f'Invalid JSON payload received. Unknown name "{kind}" at '
                                f"'requests[{i}]': Cannot find field.")
        try:
            replies.append(handler(work, body or {}))
        except ApiError as e:
            raise ApiError(400, f"Invalid requests[{i}].{kind}: {e.message}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ApiError(400, f"Invalid requests[{i}].{kind}: bad field {e}") from None
    return work, replies



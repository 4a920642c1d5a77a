"""How a data set's objects fall into COCO's size bins, the ones AP_s, AP_m and AP_l average over.

    python -m src.analysis.sizes data/synthetic data/glyphs --split val2017
    python -m src.analysis.sizes path/to/instances_val2017.json

Each argument is a data root (``annotations/instances_{split}.json`` under it) or an annotation
file. Objects are the annotations that are not crowd, binned by their ``area`` field (COCO's
evaluation bins by it: the segment's area, not the box's) against pycocotools' bounds, 32² and
96²: small below 32², medium up to 96², large from 96². COCO's evaluation counts an area exactly
on a bound in both bins it closes; here it goes to the upper one. A row whose AP_l is low on a
set with few large objects says less than one on a set with many.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pycocotools.cocoeval import Params

# pycocotools' area ranges: all, small, medium, large (pixels², [low, high])
_PARAMS = Params(iouType="bbox")
_BOUNDS = dict(zip(_PARAMS.areaRngLbl, _PARAMS.areaRng))
SIZES = ("small", "medium", "large")


def annotation_file(path: str | Path, split: str) -> Path:
    """``path`` itself when it is a file, else ``path/annotations/instances_{split}.json``."""
    path = Path(path)
    if path.is_file():
        return path
    candidate = path / "annotations" / f"instances_{split}.json"
    if not candidate.is_file():
        raise FileNotFoundError(
            f"{str(path)!r}: neither an annotation file nor a data root with {candidate.relative_to(path)}"
        )
    return candidate


def size_counts(path: str | Path) -> dict[str, Any]:
    """``{"file", "images", "objects", "crowd", "small", "medium", "large"}`` of one COCO
    annotation file (counts; ``objects`` excludes crowd)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        annotations = data["annotations"]
        images = len(data["images"])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a JSON file: {error}") from None
    except (KeyError, TypeError):
        raise ValueError(
            f"{path} is not a COCO annotation file: it needs 'images' and 'annotations' lists"
        ) from None
    counts = {"file": str(path), "images": images, "objects": 0, "crowd": 0}
    counts |= dict.fromkeys(SIZES, 0)
    for i, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise ValueError(f"{path}: annotation {i} is {annotation!r}; a JSON object is needed")
        if annotation.get("iscrowd", 0):
            counts["crowd"] += 1
            continue
        area = annotation.get("area")
        if not isinstance(area, (int, float)) or isinstance(area, bool) or area < 0:
            raise ValueError(
                f"{path}: annotation {i} (id {annotation.get('id')}) has area {area!r}; "
                "a number >= 0 is needed"
            )
        size = next(s for s in reversed(SIZES) if area >= _BOUNDS[s][0])
        counts[size] += 1
        counts["objects"] += 1
    return counts


def markdown(rows: list[dict[str, Any]]) -> str:
    """One line per file: counts and each bin's share of the (non-crowd) objects."""
    lines = [
        "| file | images | objects | crowd | small | medium | large |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        n = row["objects"]
        shares = [f"{row[s]} ({100 * row[s] / n:.0f}%)" if n else "0" for s in SIZES]
        lines.append(
            f"| {row['file']} | {row['images']} | {n} | {row['crowd']} | "
            + " | ".join(shares)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="data roots or instances_*.json files")
    parser.add_argument("--split", default="val2017",
                        help="the split a data root is read for (default val2017)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        rows = [size_counts(annotation_file(p, args.split)) for p in args.paths]
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    bounds = ", ".join(f"{s} {_BOUNDS[s][0]:g}-{_BOUNDS[s][1]:g}" for s in SIZES)
    print(f"COCO size bins by annotation area (px²): {bounds}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()

"""The per-patient feature cache.

A patient's result is cached under a key made of the input files' content hashes, the
extraction config, the patient's levels and :data:`~refracture.features.schema.FEATURE_VERSION`,
so changed images, settings or code are measured again and nothing else is. Cache files hold
no patient ID.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from refracture.config import ExtractionConfig
from refracture.errors import ImageError
from refracture.features.patient import image_path
from refracture.features.schema import FEATURE_VERSION, PatientResult
from refracture.files import hash_file, hash_json, write_json
from refracture.ids import PATIENT_ID
from refracture.levels import level_list, sort_levels

__all__ = ["cache_key", "input_hashes", "read_cached", "write_cached"]


def input_hashes(row: Mapping[str, Any]) -> dict[str, str]:
    """Content hashes of a row's three images (bytes only: nothing is decoded)."""
    pid = str(row[PATIENT_ID])
    out = {}
    for kind in ("pdff", "r2star", "labels"):
        path = image_path(row, kind, pid)
        if not path.exists():
            raise ImageError(f"{kind} image not found", patient_id=pid, file=path)
        out[kind] = hash_file(path)
    return out


def cache_key(row: Mapping[str, Any], hashes: Mapping[str, str], config: ExtractionConfig) -> str:
    return hash_json(
        {
            "inputs": [hashes["pdff"], hashes["r2star"], hashes["labels"]],
            "config": config.model_dump(mode="json"),
            "treated": sort_levels(level_list(row.get("treated_levels"))),
            "fractured": sort_levels(level_list(row.get("fractured_levels"))),
            "version": FEATURE_VERSION,
        }
    )


def read_cached(path: Path, pid: str) -> PatientResult | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return PatientResult(
            patient_id=pid,
            features={
                k: float(v) if v is not None else float("nan") for k, v in raw["features"].items()
            },
            vertebrae=raw["vertebrae"],
            qc=raw["qc"],
            cached=True,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable cache entry: compute again


def write_cached(path: Path, result: PatientResult) -> None:
    data = asdict(result)
    data.pop("patient_id")  # the key is content-based; the file needs no ID
    data.pop("cached")
    write_json(path, data)

"""Pseudonymised patient IDs for sites that must not let their own IDs leave the hospital.

With ``--pseudonymise``, every patient_id is replaced where it enters (manifest, clinical table,
features file) by a keyed hash: ``PS-`` + the first 16 hex digits of HMAC-SHA256(key, id). The
key comes from the environment variable ``REFRACTURE_PSEUDONYM_KEY`` and is never written to a
config, log, output or MLflow run; the site, which holds the key, can recompute the pseudonym of
any of its IDs to link results back. Messages are scrubbed too, because image paths often carry
the original ID (``images/P0001/pdff.nii.gz``).

DICOM identities (names, birth dates, UIDs) never reach any output in the first place: the
loader keeps only the scanner's vendor, model, software version and field strength, the series
description and the unit it states. Device serial numbers and station names are never kept; a
scanner identity derived from them is a keyed hash under the same key
(:func:`refracture.imaging.metadata.scanner_metadata`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable

import pandas as pd

from refracture.errors import InputError
from refracture.ids import PATIENT_ID, patient_id_text

ENV_KEY = "REFRACTURE_PSEUDONYM_KEY"
MIN_KEY_LENGTH = 16
PREFIX = "PS-"


class Pseudonymiser:
    """Maps patient IDs to keyed pseudonyms (deterministic for a given key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise InputError(
                f"the pseudonymisation key must be at least {MIN_KEY_LENGTH} characters "
                f"(set {ENV_KEY})"
            )
        self._key = key
        self._seen: dict[str, str] = {}

    @classmethod
    def from_env(cls) -> Pseudonymiser:
        key = os.environ.get(ENV_KEY, "")
        if not key:
            raise InputError(
                f"--pseudonymise needs a secret key in the environment variable {ENV_KEY} "
                f"(at least {MIN_KEY_LENGTH} characters; keep it at the site to link results back)"
            )
        return cls(key.encode("utf-8"))

    def __call__(self, patient_id: object) -> str:
        pid = str(patient_id)
        if pid not in self._seen:
            digest = hmac.new(self._key, pid.encode("utf-8"), hashlib.sha256).hexdigest()
            self._seen[pid] = PREFIX + digest[:16].upper()
        return self._seen[pid]

    def table(self, df: pd.DataFrame, column: str = PATIENT_ID) -> pd.DataFrame:
        """A copy of ``df`` with its ID column replaced (missing IDs stay missing)."""
        out = df.copy()
        ids = out[column]
        out[column] = ids.where(ids.isna(), ids.map(lambda v: self(patient_id_text(v))))
        return out

    def scrub(self, text: str, originals: Iterable[object]) -> str:
        """Replace every original ID appearing in ``text`` (as a whole token) by its pseudonym."""
        ids = sorted(
            {patient_id_text(o) for o in originals if isinstance(o, str) or pd.notna(o)},
            key=len,
            reverse=True,
        )
        ids = [i for i in ids if i and i in text]
        if not ids:
            return text
        pattern = re.compile(
            r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, ids)) + r")(?![A-Za-z0-9])"
        )
        return pattern.sub(lambda m: self(m.group(1)), text)

"""Read one DICOM image series: classic (one file per slice) or enhanced multi-frame, in any
transfer syntax pydicom can decode with the installed plugins (pylibjpeg: JPEG, JPEG-LS,
JPEG 2000, RLE; GDCM as a fallback; deflate natively).

The series is chosen from a folder by the hash of its SeriesInstanceUID when the folder holds
several, and one image type from a series that mixes them (a Philips mDIXON Quant series
holds water, fat, fat fraction and T2*); see :class:`~refracture.imaging.readers.base.ImageSource`.
Only the voxels, the geometry, the scaling, the unit the series states and the scanner's
non-identifying facts reach the volume's metadata; the identity of the source series is kept
apart (:class:`~refracture.imaging.volume.SourceSeries`), in memory only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from refracture.errors import ImageError
from refracture.imaging.dicom.frames import (
    IMAGE_SOP_CLASSES,
    SEG_SOP_CLASS,
    Frame,
    frames_of,
    quiet_pydicom,
    series_hash,
    stack_key,
    text,
)
from refracture.imaging.dicom.scaling import ValueMap, value_map
from refracture.imaging.dicom.stacks import Stack, build_stack
from refracture.imaging.readers.base import ImageSource, check_shape, reason
from refracture.imaging.volume import SourceSeries

__all__ = ["Selection", "dicom_files", "read_series", "select_series"]

_PATIENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
_STUDY = ("StudyID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
          "StudyDescription")  # fmt: skip


@dataclass
class Selection:
    """The chosen series' stack, its value mapping and the first header (for metadata)."""

    stack: Stack
    values: ValueMap
    first: Dataset
    n_files: int
    sop_uids: dict[Path, str]


def dicom_files(source: ImageSource) -> list[Path]:
    """The candidate files of a source: the file itself, or every file under the folder
    (hidden files and DICOMDIR left out), in name order."""
    path = source.path
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )


def select_series(source: ImageSource, ctx: dict[str, Any], max_voxels: int) -> Selection:
    """Read the headers under ``source`` and pick its one series and image type."""
    files = dicom_files(source)
    if not files:
        raise ImageError("the DICOM folder is empty", **ctx)
    with quiet_pydicom():
        headers = _read_headers(files, lenient=source.series is not None, ctx=ctx)
    by_series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for f, ds in headers:
        by_series[text(ds.get("SeriesInstanceUID"))].append((f, ds))
    chosen = _choose_series(by_series, source, ctx)
    frames = [fr for f, ds in chosen for fr in frames_of(ds, f)]
    frames = _choose_image_type(frames, source, ctx)
    stack = build_stack(frames, ctx)
    check_shape(stack.shape, max_voxels, ctx)
    sop_uids = {f: text(ds.get("SOPInstanceUID")) for f, ds in chosen}
    return Selection(stack, value_map(stack.frames), chosen[0][1], len(chosen), sop_uids)


def read_series(
    source: ImageSource, ctx: dict[str, Any], max_voxels: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], SourceSeries]:
    """Voxels (i, j, k) in the series' physical values (the stored integers when the mapping
    is the identity), RAS+ affine, metadata, identity."""
    sel = select_series(source, ctx, max_voxels)
    stored = _decode(sel.stack.frames, ctx)
    vm = sel.values
    identity_map = np.all(vm.slopes == 1.0) and np.all(vm.intercepts == 0.0)
    if identity_map:
        zyx = stored
    else:
        zyx = stored.astype(np.float64) * vm.slopes[:, None, None] + vm.intercepts[:, None, None]
    data = np.transpose(zyx, (2, 1, 0))  # (slice, row, column) -> (i, j, k)
    meta = series_metadata(sel)
    meta["rescale_applied_by"] = None if identity_map else "refracture"
    return data, sel.stack.affine, meta, _identity(sel)


def series_metadata(sel: Selection) -> dict[str, Any]:
    """The non-identifying facts of a selection (what a Volume's metadata holds)."""
    from refracture.imaging.metadata import field_strength_tesla

    first, vm = sel.first, sel.values
    frames = sel.stack.frames
    slopes, inters = vm.slopes, vm.intercepts
    return {
        "format": "dicom",
        "vendor": text(first.get("Manufacturer")) or None,
        "model": text(first.get("ManufacturerModelName")) or None,
        "software_versions": _joined(first.get("SoftwareVersions")),
        "field_strength_t": field_strength_tesla(first.get("MagneticFieldStrength")),
        "series_description": text(first.get("SeriesDescription")) or None,
        "units_stated": vm.units_stated,
        "units_basis": vm.basis,
        "value_mapping": vm.mapping,
        "rescale_slope": float(slopes[0]) if np.all(slopes == slopes[0]) else "per-slice",
        "rescale_intercept": float(inters[0]) if np.all(inters == inters[0]) else "per-slice",
        "rescale_applied_by": None,
        "transfer_syntax": _transfer_syntax(first),
        "series": series_hash(text(first.get("SeriesInstanceUID"))),
        "image_type": stack_key(frames[0]),
        "n_frames": len(frames),
    }


def _read_headers(files: list[Path], *, lenient: bool, ctx: dict[str, Any]):
    """(file, header) of every image file; non-image objects (SEG, SR, presentation states)
    are left out. An unreadable file is an error, unless ``lenient`` (a folder from which a
    selector picks one series, as exports hold stray files)."""
    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as err:  # InvalidDicomError, truncated headers, ...
            if lenient:
                continue
            raise ImageError(
                f"{f.name} in the DICOM folder is not a readable DICOM file ({reason(err)})", **ctx
            ) from None
        sop = text(ds.get("SOPClassUID")) or text(
            getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
        )
        if sop == SEG_SOP_CLASS or (sop and sop not in IMAGE_SOP_CLASSES and "Rows" not in ds):
            continue
        out.append((f, ds))
    if not out:
        raise ImageError("the DICOM folder holds no image series", **ctx)
    return out


def _choose_series(by_series, source: ImageSource, ctx: dict[str, Any]):
    if source.series:
        for uid, items in by_series.items():
            if series_hash(uid) == source.series.lower():
                return items
        raise ImageError(
            f"no series with hash {source.series} in the DICOM folder (it holds "
            f"{_series_list(by_series)}); run refracture index again if the export changed",
            **ctx,
        )
    if len(by_series) > 1:
        raise ImageError(
            f"the DICOM folder holds {len(by_series)} series ({_series_list(by_series)}); "
            "choose one by adding #series=HASH to the path (refracture index writes these)",
            **ctx,
        )
    return next(iter(by_series.values()))


def _series_list(by_series) -> str:
    return ", ".join(
        f"{text(items[0][1].get('SeriesDescription')) or '?'!r} #series={series_hash(uid)}"
        for uid, items in sorted(by_series.items(), key=lambda kv: _number(kv[1][0][1]))
    )


def _number(ds: Dataset) -> int:
    try:
        return int(ds.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        return 0


def _choose_image_type(frames: list[Frame], source: ImageSource, ctx: dict[str, Any]):
    by_type: dict[str, list[Frame]] = defaultdict(list)
    for fr in frames:
        by_type[stack_key(fr)].append(fr)
    if source.image_type:
        if source.image_type not in by_type:
            raise ImageError(
                f"the DICOM series has no image type {source.image_type} (it holds "
                f"{', '.join(sorted(by_type))})",
                **ctx,
            )
        return by_type[source.image_type]
    if len(by_type) > 1 and _distinct_stacks(by_type):
        raise ImageError(
            f"the DICOM series holds {len(by_type)} image types ({', '.join(sorted(by_type))}); "
            "choose one by adding &type=KEY to the path (refracture index writes these)",
            **ctx,
        )
    return frames


def _distinct_stacks(by_type: dict[str, list[Frame]]) -> bool:
    """Several image types that each cover the same positions are separate images; image types
    that split one set of positions between them (some vendors flag slices differently) are
    one stack."""
    positions = [{f.position for f in group} for group in by_type.values()]
    return any(a & b for i, a in enumerate(positions) for b in positions[i + 1 :])


def _decode(frames: list[Frame], ctx: dict[str, Any]) -> np.ndarray:
    """Stored pixel values of each frame, (frame, row, column), decoded once per file."""
    by_file: dict[Path, list[tuple[int, int | None]]] = defaultdict(list)
    for k, fr in enumerate(frames):
        by_file[fr.file].append((k, fr.number))
    out: np.ndarray | None = None
    for f, items in by_file.items():
        with quiet_pydicom():
            arr = _pixels(f, ctx)
        if out is None:
            out = np.empty((len(frames), *arr.shape[-2:]), dtype=arr.dtype)
        if arr.ndim == 2:
            arr = arr[None]
        for k, number in items:
            index = 0 if number is None else number
            if index >= arr.shape[0] or arr.shape[-2:] != out.shape[-2:]:
                raise ImageError(f"{f.name} holds fewer frames than its header lists", **ctx)
            out[k] = arr[index]
    assert out is not None
    return out


def _pixels(f: Path, ctx: dict[str, Any]) -> np.ndarray:
    try:
        # pydicom reads only what decoding needs (about 15 % less than a whole dataset)
        return np.asarray(pixel_array(f))
    except Exception:  # noqa: BLE001 - deflated files and the rest: the whole dataset below
        pass
    try:
        return np.asarray(pydicom.dcmread(f).pixel_array)
    except (NotImplementedError, RuntimeError) as err:
        try:
            uid = pydicom.filereader.read_file_meta_info(f).get("TransferSyntaxUID")
            syntax = uid.name if uid is not None else "unknown transfer syntax"
        except Exception:  # noqa: BLE001 - the message names the file either way
            syntax = "unknown transfer syntax"
        raise ImageError(
            f"the DICOM pixel data cannot be decoded ({f.name}: {syntax}; {reason(err)[:120]})",
            **ctx,
        ) from None
    except Exception:  # noqa: BLE001 - truncated or corrupt pixel data, whatever pydicom raises
        raise ImageError(
            f"the DICOM pixel data cannot be read ({f.name} is truncated or corrupt)", **ctx
        ) from None


def _transfer_syntax(ds: Dataset) -> str | None:
    uid = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    return uid.name if uid is not None else None


def _joined(value: Any) -> str | None:
    """A possibly multi-valued DICOM string as one text ('27.0 / MR30.1'), None when empty."""
    if value is None:
        return None
    items = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
    out = " / ".join(str(v).strip() for v in items if str(v).strip())
    return out or None


def _identity(sel: Selection) -> SourceSeries:
    first = sel.first
    instances = tuple((sel.sop_uids[fr.file], fr.number) for fr in sel.stack.frames)
    files = tuple(dict.fromkeys(fr.file for fr in sel.stack.frames))
    return SourceSeries(
        study_uid=text(first.get("StudyInstanceUID")),
        series_uid=text(first.get("SeriesInstanceUID")),
        frame_of_reference_uid=text(first.get("FrameOfReferenceUID")),
        sop_class_uid=text(first.get("SOPClassUID")),
        instances=instances,
        files=files,
        patient={k: text(first.get(k)) for k in _PATIENT},
        study={k: text(first.get(k)) for k in _STUDY},
    )

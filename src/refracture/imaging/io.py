"""Reading maps and label maps: NIfTI (nibabel), DICOM series (SimpleITK/GDCM), NRRD/MHA.

Each reader looks at the header first and refuses a volume whose claimed size exceeds
``max_voxels`` before any voxel is decoded, so a corrupt or hostile header cannot make us
allocate gigabytes. Every failure is an :class:`~refracture.errors.ImageError` naming the
file and what is wrong; DICOM fields that identify a person, study or institution are never
read into the volume, so they cannot reach a message or an output.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk

from refracture.errors import ImageError
from refracture.files import hash_file
from refracture.imaging.metadata import field_strength_tesla
from refracture.imaging.volume import Kind, Volume, affine_from_sitk, array_from_sitk

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
DEFAULT_MAX_VOXELS = 200_000_000

# A file up to this size is read into memory once, hashed and decoded from the same bytes;
# a larger one is hashed in chunks and decoded by nibabel from disk.
SINGLE_READ_MAX_BYTES = 1 << 30

# Relative tolerance on the spacing between consecutive DICOM slices: more than this and a
# slice is missing (or the folder mixes stacks).
_SLICE_GAP_TOLERANCE = 0.05


def load_volume(
    path: str | Path,
    kind: Kind,
    *,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    patient_id: str | None = None,
    content_hash: str | None = None,
    content: bytes | None = None,
) -> Volume:
    """Read a 3-D map (``kind`` 'pdff' or 'r2star') or label map (``kind`` 'labels').

    ``path`` is a NIfTI, NRRD or MHA file, or a folder holding one DICOM series. Maps come
    back as float32 in their stored units after the file's own scaling (NIfTI scl_slope,
    DICOM RescaleSlope/Intercept), with ``units=None`` (decided later from config or values);
    label maps as int32. ``content_hash`` may be passed when already computed; ``content``,
    the file's bytes already read (see :func:`read_image_bytes`), is decoded instead of
    reading the file again (NIfTI; other formats are read from ``path``).
    """
    if kind not in ("pdff", "r2star", "labels"):
        raise ValueError(f"kind must be 'pdff', 'r2star' or 'labels', not {kind!r}")
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{kind} image not found", patient_id=patient_id, file=path)
    ctx = {"patient_id": patient_id, "file": path}
    if path.is_dir():
        data, affine, meta = _read_dicom_series(path, max_voxels, ctx)
    else:
        if path.stat().st_size == 0:
            raise ImageError("the file is empty", **ctx)
        name = path.name.lower()
        if name.endswith(NIFTI_SUFFIXES):
            if content is None and content_hash is None:
                content = read_image_bytes(path)  # one read for the decode and the hash
            if content is not None and content_hash is None:
                content_hash = hashlib.sha256(content).hexdigest()
            data, affine, meta = _read_nifti(path, max_voxels, ctx, content)
        elif name.endswith(SITK_SUFFIXES):
            data, affine, meta = _read_sitk_file(path, max_voxels, ctx)
        else:
            raise ImageError(
                "unsupported image format (use .nii, .nii.gz, .nrrd, .mha or a DICOM folder)",
                **ctx,
            )
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ImageError("the image has no valid voxel-to-world geometry (affine)", **ctx)
    data = _as_kind(data, kind, ctx)
    return Volume(
        data=data,
        affine=affine,
        kind=kind,
        path=path,
        content_hash=content_hash or hash_file(path),
        units=None,
        metadata=meta,
    )


def _as_kind(data: np.ndarray, kind: Kind, ctx: dict[str, Any]) -> np.ndarray:
    if kind != "labels":
        return np.asarray(data, dtype=np.float32)
    if np.issubdtype(data.dtype, np.integer):
        return np.asarray(data, dtype=np.int32)
    finite = np.isfinite(data)
    if not finite.all() or not np.array_equal(data, np.round(data)):
        raise ImageError(
            "the label map holds non-integer values; integer labels are expected", **ctx
        )
    return data.astype(np.int32)


def _check_shape(shape: tuple[int, ...], max_voxels: int, ctx: dict[str, Any]) -> tuple[int, ...]:
    """Validate a header shape; return the 3-D shape (trailing singleton dims dropped)."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ImageError(
            f"is {len(shape)}-D with shape {shape}; a 3-D volume is expected "
            "(select one volume of the series)",
            **ctx,
        )
    if len(shape) < 3 or min(shape) < 2:
        raise ImageError(f"is 2-D (shape {shape}); a 3-D volume is expected", **ctx)
    n = math.prod(shape)
    if n > max_voxels:
        raise ImageError(
            f"the header claims {n:,} voxels {shape}, more than extraction.max_voxels "
            f"({max_voxels:,}); refusing to read it",
            **ctx,
        )
    return shape


def read_image_bytes(path: str | Path) -> bytes | None:
    """The bytes of an image file, to hash and decode from one read; None for a folder (a
    DICOM series) or a file above :data:`SINGLE_READ_MAX_BYTES` (hashed in chunks instead).

    ``hashlib.sha256(content).hexdigest()`` of the result equals
    :func:`refracture.files.hash_file` of the path.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size > SINGLE_READ_MAX_BYTES:
        return None
    return path.read_bytes()


# --- NIfTI -------------------------------------------------------------------------------


def _read_nifti(path: Path, max_voxels: int, ctx: dict[str, Any], content: bytes | None = None):
    if content is not None:
        fast = _nifti_from_bytes(content, path.name.lower().endswith(".gz"), max_voxels)
        if fast is not None:
            img, data = fast
            return _nifti_result(img, data, _check_shape(img.shape, max_voxels, ctx))
    # From the file (and for any file the in-memory path declined: the same messages).
    try:
        img = nib.load(str(path))  # reads the header only
    except Exception as err:  # nibabel raises many types for broken headers
        raise ImageError(f"not a readable NIfTI file ({_reason(err, path)})", **ctx) from None
    shape = _check_shape(img.shape, max_voxels, ctx)
    try:
        # The dataobj proxy applies scl_slope/scl_inter; nothing is read before this line.
        data = np.asarray(img.dataobj)
    except Exception as err:  # truncated or corrupt compressed data
        raise ImageError(
            f"the NIfTI voxel data cannot be read ({_reason(err, path)})", **ctx
        ) from None
    return _nifti_result(img, data, shape)


def _nifti_result(img: Any, data: np.ndarray, shape: tuple[int, ...]):
    data = data.reshape(shape)
    # nibabel moves scl_slope/scl_inter from the header to the array proxy on load.
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    scaled = slope != 1.0 or inter != 0.0
    meta = {
        "format": "nifti",
        "rescale_slope": slope,
        "rescale_intercept": inter,
        "rescale_applied_by": "nibabel" if scaled else None,
    }
    return data, np.asarray(img.affine, dtype=np.float64), meta


def _nifti_from_bytes(
    content: bytes, gzipped: bool, max_voxels: int
) -> tuple[Any, np.ndarray] | None:
    """Decode a single-file NIfTI-1/2 from its bytes with nibabel (the same header handling and
    scaling as ``nib.load``), inflating gzip with isal when installed (2-3x zlib's speed).

    Only as many bytes as the header says the voxels take are inflated, so a hostile header or
    a gzip bomb cannot make us allocate more than ``max_voxels`` allow. Returns None for
    anything unusual (other header sizes, a too-large or unreadable header, truncated data):
    the caller then reads the file with ``nib.load``, which gives the usual error messages.
    """
    try:
        inflater = _Inflater(content) if gzipped else None
        head = inflater.read(_NIFTI2_HEADER_BYTES) if inflater else content[:_NIFTI2_HEADER_BYTES]
        klass = _nifti_class(head)
        if klass is None:
            return None
        header = klass.header_class.from_fileobj(io.BytesIO(head))
        shape = header.get_data_shape()
        n = math.prod(int(s) for s in shape)
        if n > max_voxels or len(shape) < 3:
            return None
        need = int(header.get_data_offset()) + n * header.get_data_dtype().itemsize
        raw = head + inflater.read(need - len(head)) if inflater else content
        if len(raw) < need:
            return None  # truncated: nibabel names the problem
        tail = inflater.read(_GZIP_TAIL_BYTES) if inflater else b""
        if inflater and len(tail) < _GZIP_TAIL_BYTES and not inflater.finished:
            return None  # the gzip stream stops short of its end (and CRC): nibabel decides
        img = klass.from_bytes(raw)
        return img, np.asarray(img.dataobj)
    except Exception:  # noqa: BLE001 - the nibabel path below reports the failure
        return None


_NIFTI1_HEADER_BYTES = 348
# After the voxels, inflate at most this much more to reach the gzip end (and its CRC check).
_GZIP_TAIL_BYTES = 1 << 16
_NIFTI2_HEADER_BYTES = 540


def _nifti_class(head: bytes) -> Any:
    """Nifti1Image or Nifti2Image for a single-file (``n+1``/``n+2``) header, else None."""
    if len(head) < _NIFTI1_HEADER_BYTES:
        return None
    size = {int.from_bytes(head[:4], order) for order in ("little", "big")}
    if _NIFTI1_HEADER_BYTES in size and head[344:348] == b"n+1\x00":
        return nib.Nifti1Image
    if _NIFTI2_HEADER_BYTES in size and len(head) >= 540 and head[4:8] == b"n+2\x00":
        return nib.Nifti2Image
    return None


class _Inflater:
    """Incremental gzip inflation of bytes in memory, never past what is asked for
    (multi-member files too, as ``gzip`` reads them)."""

    def __init__(self, content: bytes) -> None:
        self._pending = content
        self._obj = _zlib.decompressobj(31)  # 31: gzip wrapper

    @property
    def finished(self) -> bool:
        """The whole stream was inflated, every member's CRC checked (by zlib)."""
        return bool(self._obj.eof and not self._obj.unused_data and not self._pending)

    def read(self, size: int) -> bytes:
        out: list[bytes] = []
        while size > 0:
            if self._obj.eof:
                rest = self._obj.unused_data
                if not rest:
                    break
                self._obj, self._pending = _zlib.decompressobj(31), rest
            chunk = self._obj.decompress(self._pending, size)
            self._pending = self._obj.unconsumed_tail
            if not chunk and not self._pending and not self._obj.eof:
                break  # truncated stream
            out.append(chunk)
            size -= len(chunk)
        return b"".join(out)


try:  # python-isal: the same inflate as zlib (same bytes out), 2-3x faster
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - optional speed-up
    import zlib as _zlib


# --- NRRD / MHA --------------------------------------------------------------------------


def _read_sitk_file(path: Path, max_voxels: int, ctx: dict[str, Any]):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ImageError(f"not a readable image header ({_reason(err, path)})", **ctx) from None
    if reader.GetNumberOfComponents() != 1:
        raise ImageError(
            f"has {reader.GetNumberOfComponents()} components per voxel; a scalar map is expected",
            **ctx,
        )
    shape = _check_shape(reader.GetSize(), max_voxels, ctx)
    try:
        img = reader.Execute()
    except RuntimeError as err:
        raise ImageError(f"the voxel data cannot be read ({_reason(err, path)})", **ctx) from None
    if img.GetDimension() > 3:  # trailing singleton dimensions, already checked
        img = sitk.Extract(
            img, [*shape, *([0] * (img.GetDimension() - 3))], [0] * img.GetDimension()
        )
    return array_from_sitk(img), affine_from_sitk(img), {"format": path.suffix.lower().lstrip(".")}


# --- DICOM -------------------------------------------------------------------------------

# Only these header fields are read from DICOM (pydicom ``specific_tags``): geometry, pixel
# description, scaling, the units the series states, and the non-identifying scanner facts a
# Volume keeps (vendor, model, software, field strength; never the serial number or station).
_DICOM_TAGS = [
    "SeriesInstanceUID",  # compared, never stored
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "RealWorldValueMappingSequence",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "MagneticFieldStrength",
    "SeriesDescription",
    "TransferSyntaxUID",
]


def _read_dicom_series(folder: Path, max_voxels: int, ctx: dict[str, Any]):
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )
    if not files:
        raise ImageError("the DICOM folder is empty", **ctx)
    headers = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_DICOM_TAGS)
        except Exception as err:  # InvalidDicomError, truncated headers, ...
            raise ImageError(
                f"{f.name} in the DICOM folder is not a readable DICOM file ({_reason(err)})", **ctx
            ) from None
        headers.append(ds)

    series = Counter(str(ds.get("SeriesInstanceUID", "")) for ds in headers)
    if len(series) > 1:
        descriptions = sorted({str(ds.get("SeriesDescription", "?")) for ds in headers})
        raise ImageError(
            f"the DICOM folder holds {len(series)} series (descriptions: "
            f"{', '.join(repr(d) for d in descriptions)}); put one series per folder",
            **ctx,
        )
    for ds in headers:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise ImageError(
                "a DICOM file has no ImagePositionPatient/ImageOrientationPatient", **ctx
            )
    if len(headers) == 1 and int(headers[0].get("NumberOfFrames", 1) or 1) > 1:
        raise ImageError(
            "multi-frame (enhanced) DICOM is not supported; export the series as one file per "
            "slice or convert it to NIfTI",
            **ctx,
        )
    rows = {int(ds.Rows) for ds in headers}
    cols = {int(ds.Columns) for ds in headers}
    if len(rows) > 1 or len(cols) > 1:
        raise ImageError("the DICOM slices differ in size (Rows/Columns)", **ctx)

    orient = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64)
    for ds in headers[1:]:
        if not np.allclose(
            np.asarray(ds.ImageOrientationPatient, dtype=np.float64), orient, atol=1e-4
        ):
            raise ImageError("the DICOM slices differ in orientation", **ctx)
    normal = np.cross(orient[:3], orient[3:])
    pos = np.array(
        [np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=np.float64)) for ds in headers]
    )
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    headers = [headers[i] for i in order]
    files = [files[i] for i in order]
    _check_shape((cols.pop(), rows.pop(), len(files)), max_voxels, ctx)
    _check_slice_positions(pos, ctx)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    try:
        img = reader.Execute()
    except RuntimeError as err:
        raise ImageError(
            f"the DICOM pixel data cannot be read ({_unreadable_slice(files) or _reason(err)})",
            **ctx,
        ) from None
    zyx = sitk.GetArrayFromImage(img)  # (slice, row, col) in our file order

    slopes = np.array([float(ds.get("RescaleSlope", 1.0) or 1.0) for ds in headers])
    inters = np.array([float(ds.get("RescaleIntercept", 0.0) or 0.0) for ds in headers])
    applied_by = None
    if np.any(slopes != 1.0) or np.any(inters != 0.0):
        applied = _itk_applied_rescale(zyx, files, slopes, inters, ctx)
        if applied:
            applied_by = "itk"
        else:
            zyx = zyx.astype(np.float64) * slopes[:, None, None] + inters[:, None, None]
            applied_by = "refracture"

    first = headers[0]
    meta = {
        "format": "dicom",
        "vendor": str(first.get("Manufacturer", "")) or None,
        "model": str(first.get("ManufacturerModelName", "")) or None,
        "software_versions": _joined(first.get("SoftwareVersions")),
        "field_strength_t": field_strength_tesla(first.get("MagneticFieldStrength")),
        "series_description": str(first.get("SeriesDescription", "")) or None,
        "units_stated": _stated_units(first, float(slopes[0]), float(inters[0])),
        "rescale_slope": float(slopes[0]) if np.all(slopes == slopes[0]) else "per-slice",
        "rescale_intercept": float(inters[0]) if np.all(inters == inters[0]) else "per-slice",
        "rescale_applied_by": applied_by,
    }
    return np.transpose(zyx, (2, 1, 0)), affine_from_sitk(img), meta


def _joined(value: Any) -> str | None:
    """A possibly multi-valued DICOM string as one text ('27.0 / MR30.1'), None when empty."""
    if value is None:
        return None
    items = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
    text = " / ".join(str(v).strip() for v in items if str(v).strip())
    return text or None


def _stated_units(ds: pydicom.Dataset, slope: float, intercept: float) -> str | None:
    """The unit a series states for its rescaled values, as written (None when it says none).

    The standard place is a Real World Value Mapping item's MeasurementUnitsCodeSequence (a
    UCUM code such as '%' or '/s'); it is used only when the mapping's slope and intercept are
    those of RescaleSlope/Intercept, i.e. when the unit describes the values we read. A
    RescaleType other than the defaults ('US' unspecified, 'HU') is kept as stated too.
    """
    for item in ds.get("RealWorldValueMappingSequence", None) or []:
        units = item.get("MeasurementUnitsCodeSequence", None) or []
        code = str(units[0].get("CodeValue", "")).strip() if len(units) else ""
        rwv_slope = item.get("RealWorldValueSlope", None)
        rwv_inter = item.get("RealWorldValueIntercept", 0.0) or 0.0
        if code and rwv_slope is not None:
            same = math.isclose(float(rwv_slope), slope, rel_tol=1e-6) and math.isclose(
                float(rwv_inter), intercept, rel_tol=1e-6, abs_tol=1e-9
            )
            if same:
                return code
    rescale_type = str(ds.get("RescaleType", "") or "").strip()
    if rescale_type and rescale_type.upper() not in ("US", "HU", "OD"):
        return rescale_type
    return None


def _check_slice_positions(pos: np.ndarray, ctx: dict[str, Any]) -> None:
    gaps = np.diff(pos)
    if np.any(gaps < 1e-3):
        raise ImageError(
            "two DICOM slices share a position (several echoes, time points or series in one "
            "folder?); put one 3-D series per folder",
            **ctx,
        )
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > _SLICE_GAP_TOLERANCE * step)
    if bad.size:
        i = int(bad[0])
        raise ImageError(
            f"DICOM slice positions are not evenly spaced: a gap of {gaps[i]:.2f} mm after slice "
            f"{i + 1} where the spacing is {step:.2f} mm (missing slices?)",
            **ctx,
        )


def _itk_applied_rescale(
    zyx: np.ndarray, files: list[Path], slopes: np.ndarray, inters: np.ndarray, ctx: dict[str, Any]
) -> bool:
    """Did GDCM/ITK apply RescaleSlope/Intercept? Decide by decoding one slice with pydicom.

    GDCM's handling of the Modality LUT for MR Image Storage has changed between versions, so
    instead of assuming either way we compare one slice against its raw stored values.
    Never apply the rescale twice.
    """
    k = int(np.argmax(np.abs(zyx.reshape(zyx.shape[0], -1)).max(axis=1)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = pydicom.dcmread(files[k]).pixel_array.astype(np.float64)
    except Exception:
        # Compressed pixel data pydicom cannot decode here: ITK converts to a float pixel
        # type exactly when it rescales with non-integer factors.
        return bool(np.issubdtype(zyx.dtype, np.floating))
    itk = zyx[k].astype(np.float64)
    scaled = raw * slopes[k] + inters[k]
    if raw.shape != itk.shape:
        raise ImageError("DICOM slice size differs between pydicom and ITK", **ctx)
    if np.allclose(itk, scaled, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(scaled).max()))):
        return True
    if np.array_equal(itk, raw):
        return False
    raise ImageError("cannot establish how the DICOM pixel values are scaled", **ctx)


def _unreadable_slice(files: list[Path]) -> str | None:
    """Name the first slice file ITK cannot decode (only called after a failure)."""
    for f in files:
        try:
            sitk.ReadImage(str(f))
        except RuntimeError:
            return f"{f.name} is truncated or corrupt"
    return None


def _reason(err: BaseException, path: Path | None = None) -> str:
    """A short one-line cause (ITK messages span many lines and name source files).

    The message already starts with the file's full path, so a cause that repeats it (nibabel:
    'Cannot work out file type of "/data/.../labels.nii.gz"') names only the file.
    """
    text = " ".join(str(err).split()) or type(err).__name__
    if path is not None:
        text = text.replace(str(path), path.name)
    if "ITK ERROR:" in text:  # "... ITK ERROR: MetaImageIO(0x55..): File cannot be read: ..."
        text = text.split("ITK ERROR:", 1)[1]
        text = text.split("): ", 1)[1] if "): " in text else text
        text = text.split(" Reason:", 1)[0]  # ITK appends a stale errno ("No such file")
    return text.strip()[:200]

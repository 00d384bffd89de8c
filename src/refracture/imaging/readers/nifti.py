"""NIfTI-1/2 maps and label maps (``.nii``, ``.nii.gz``), read with nibabel.

``scl_slope``/``scl_inter`` are applied by nibabel's array proxy; a file already in memory (the
bytes that were hashed for the cache) is decoded from those bytes, inflating only as much as
the header says the voxels take.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from refracture.errors import ImageError
from refracture.imaging.readers.base import (
    ImageHeader,
    ImageSource,
    ReadResult,
    check_shape,
    reason,
)

__all__ = ["NiftiReader"]


class NiftiReader:
    """``.nii`` / ``.nii.gz`` files (also without the suffix, by their header's magic)."""

    name = "nifti"
    suffixes = (".nii.gz", ".nii")

    def sniff(self, source: ImageSource, head: bytes) -> bool:
        name = source.path.name.lower()
        if name.endswith(self.suffixes):
            return True
        return _nifti_class(head) is not None

    def read_header(self, source: ImageSource, ctx: dict[str, Any]) -> ImageHeader:
        img = _load_header(source.path, ctx)
        shape = check_shape(img.shape, 2**62, ctx)
        slope = float(img.dataobj.slope) if hasattr(img.dataobj, "slope") else 1.0
        meta = {"format": "nifti", "rescale_slope": slope}
        return ImageHeader(source.path, "nifti", shape, np.asarray(img.affine, dtype=np.float64),
                           metadata=meta)  # fmt: skip

    def read(
        self, source: ImageSource, ctx: dict[str, Any], max_voxels: int, content: bytes | None
    ) -> ReadResult:
        data, affine, meta = _read_nifti(source.path, max_voxels, ctx, content)
        return ReadResult(data, affine, meta)


def _load_header(path: Path, ctx: dict[str, Any]) -> Any:
    try:
        return nib.load(str(path))  # reads the header only
    except Exception as err:  # nibabel raises many types for broken headers
        raise ImageError(f"not a readable NIfTI file ({reason(err, path)})", **ctx) from None


def _read_nifti(path: Path, max_voxels: int, ctx: dict[str, Any], content: bytes | None = None):
    if content is not None:
        fast = _nifti_from_bytes(content, path.name.lower().endswith(".gz"), max_voxels)
        if fast is not None:
            img, data = fast
            return _nifti_result(img, data, check_shape(img.shape, max_voxels, ctx))
    # From the file (and for any file the in-memory path declined: the same messages).
    img = _load_header(path, ctx)
    shape = check_shape(img.shape, max_voxels, ctx)
    try:
        # The dataobj proxy applies scl_slope/scl_inter; nothing is read before this line.
        data = np.asarray(img.dataobj)
    except Exception as err:  # truncated or corrupt compressed data
        raise ImageError(
            f"the NIfTI voxel data cannot be read ({reason(err, path)})", **ctx
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

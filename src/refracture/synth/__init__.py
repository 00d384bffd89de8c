"""``refracture synth``: a synthetic multi-centre IDEAL-IQ cohort (docs/synthetic.md).

:func:`write_cohort` simulates the patients (:mod:`.cohort`), draws their PDFF, R2* and label
maps (:mod:`.phantom`) and writes them as NIfTI or DICOM (:mod:`.dicom`) with the manifest,
clinical table and ground truth. The same seed gives identical tables and voxel arrays, whatever
the number of worker processes.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from refracture.errors import InputError
from refracture.files import atomic_path, write_json, write_table
from refracture.levels import TL_LEVELS
from refracture.progress import Progress, stage_ticker
from refracture.synth.cohort import Cohort, Scanner, simulate_cohort, truth_dict
from refracture.synth.dicom import PDFF_SCALES, Identity, write_series
from refracture.synth.phantom import PatientAnatomy, generate

__all__ = ["SynthResult", "simulate_cohort", "write_cohort", "anatomy_of"]

try:  # python-isal: the gzip format of zlib (same voxels on reading), deflating 6x faster
    from isal.igzip import IGzipFile as _GzipFile
except ImportError:  # pragma: no cover - isal is a dependency; zlib when it is missing
    from gzip import GzipFile as _GzipFile

FORMATS = ("nifti", "dicom", "dicom-export")
STUDY_START = dt.date(2024, 1, 8)  # first surgery of the synthetic study: assumption


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    manifest: Path | None  # None for a PACS export: `refracture index` builds the manifest
    clinical: Path
    truth_csv: Path
    truth_json: Path
    n_patients: int
    n_sites: int


def anatomy_of(cohort: Cohort, i: int, seed: int) -> PatientAnatomy:
    """The image generator's view of patient ``i``."""
    row = cohort.clinical.iloc[i]
    truth = cohort.truth.iloc[i]
    lv = cohort.levels[row["patient_id"]]
    spine = cohort.spine[row["patient_id"]]
    site = next(s for s in cohort.sites if s.name == row["site"])
    return PatientAnatomy(
        patient_id=row["patient_id"],
        site_index=site.index,
        field_strength_t=float(truth["field_strength_t"]),  # the patient's scanner's
        male=row["sex"] == "M",
        bmi=float(row["bmi"]),
        age=float(row["age"]),
        pdff={level: float(truth[f"pdff_mean_{level}"]) for level in TL_LEVELS},
        r2star={level: float(truth[f"r2star_mean_{level}"]) for level in TL_LEVELS},
        treated=tuple(lv["treated"]),
        cement_ml=tuple(lv["cement_ml"]),
        old_fractures=tuple(lv["old"]),
        leakage=str(row["cement_leakage"]),
        seed=(seed, i, 7),
        size=spine["size"],
        pitch_deg=spine["pitch_deg"],
        shapes=spine["shapes"],
    )


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, kind: str) -> None:
    if kind == "labels":
        img = nib.Nifti1Image(data.astype(np.uint8), affine)
    else:
        # int16 with scl_slope 0.1 (0.1 % or 0.1 1/s steps), as scanner exports store maps
        img = nib.Nifti1Image(np.rint(data * 10.0).clip(-32768, 32767).astype(np.int16), affine)
        img.header.set_slope_inter(0.1, 0.0)
        img.header["descrip"] = {"pdff": b"PDFF (percent)", "r2star": b"R2* (1/s)"}[kind]
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    # nibabel writes the NIfTI stream into our gzip file: level 1 as nibabel's own, no file
    # name and time in the gzip header, so the same seed gives the same bytes
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as raw,
        _GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0) as gz,
    ):
        holder = nib.FileHolder(fileobj=gz)
        img.to_file_map({"image": holder, "header": holder})


def _sidecar(kind: str, scanner: Scanner) -> dict:
    """A BIDS-style sidecar for a NIfTI map: its unit and the scanner (no serial number)."""
    return {
        "Units": {"pdff": "percent", "r2star": "1/s"}[kind],
        "MagneticFieldStrength": scanner.field_strength_t,
        "Manufacturer": scanner.vendor,
        "ManufacturerModelName": scanner.model,
        "SoftwareVersions": scanner.software,
    }


def _write_patient(job: tuple) -> None:
    (
        anatomy,
        folder,
        image_format,
        pdff_scale,
        site_name,
        study_date,
        ident_seed,
        age,
        sex,
        scanner,
    ) = job
    maps = generate(anatomy)
    folder.mkdir(parents=True, exist_ok=True)
    _save_nifti(folder / "labels.nii.gz", maps.labels, maps.affine, "labels")
    if image_format == "nifti":
        for kind, values in (("pdff", maps.pdff), ("r2star", maps.r2star)):
            _save_nifti(folder / f"{kind}.nii.gz", values, maps.affine, kind)
            write_json(folder / f"{kind}.json", _sidecar(kind, scanner))
        return
    identity = Identity.make(np.random.default_rng(list(ident_seed)), age, sex, study_date)
    for kind, values in (("pdff", maps.pdff), ("r2star", maps.r2star)):
        target = folder / kind
        if target.exists():
            shutil.rmtree(target)
        write_series(
            target,
            values,
            kind=kind,
            identity=identity,
            direction_lps=maps.direction_lps,
            origin_lps=maps.origin_lps,
            spacing=maps.spacing,
            field_strength_t=anatomy.field_strength_t,
            manufacturer=scanner.manufacturer,
            model=scanner.model,
            software=scanner.software,
            site_name=site_name,
            study_date=study_date,
            pdff_scale=pdff_scale,
        )


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".refracture-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"cannot write to the output folder ({reason})", file=out_dir) from None


def write_cohort(
    out_dir: str | Path,
    *,
    n: int = 560,
    n_sites: int = 4,
    seed: int = 0,
    image_format: str = "nifti",
    id_prefix: str = "P",
    dicom_pdff_scale: str = "per_mille",
    jobs: int = 2,
    progress: Progress | None = None,
    dicomdir: bool = False,
    grid: tuple | None = None,
) -> SynthResult:
    """Simulate a cohort and write it to ``out_dir`` (docs/synthetic.md lists the files).

    ``image_format`` 'dicom-export' writes a PACS export (``export/``, see
    :mod:`refracture.synth.dicom_export`) instead of per-patient image folders and a manifest;
    ``dicomdir`` makes it a DICOMDIR file set; ``grid``, a (shape, spacing), replaces the
    sites' scan grids (smaller exports for tests).
    """
    if n < 1:
        raise InputError(f"n must be at least 1 (got {n})")
    if n_sites < 1:
        raise InputError(f"sites must be at least 1 (got {n_sites})")
    if n_sites > n:
        raise InputError(f"more sites ({n_sites}) than patients ({n}): every site needs a patient")
    if image_format not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)} (got {image_format!r})")
    if dicom_pdff_scale not in PDFF_SCALES:
        raise InputError(f"dicom_pdff_scale must be one of {', '.join(PDFF_SCALES)}")
    if jobs < 1:
        raise InputError(f"jobs must be at least 1 (got {jobs})")
    if not id_prefix or not id_prefix.replace("-", "").replace("_", "").isalnum():
        raise InputError("id_prefix must be letters, digits, '-' or '_'")
    out_dir = Path(out_dir)
    _check_writable(out_dir)

    cohort = simulate_cohort(n, n_sites, seed, id_prefix=id_prefix)
    if image_format == "dicom-export":
        from refracture.synth.dicom_export import write_export

        return write_export(out_dir, cohort, seed, jobs, progress, dicomdir, SynthResult, grid)
    clinical = cohort.clinical
    rng_dates = np.random.default_rng([seed, 99])
    surgery_offsets = np.sort(rng_dates.integers(0, 365, n))
    jobs_list = []
    manifest_rows = []
    ext = ".nii.gz" if image_format == "nifti" else ""
    scanners = cohort.scanners
    for i, pid in enumerate(clinical["patient_id"]):
        folder = out_dir / "images" / pid
        study_date = STUDY_START + dt.timedelta(days=int(surgery_offsets[i]))
        row = clinical.iloc[i]
        jobs_list.append(
            (
                anatomy_of(cohort, i, seed),
                folder,
                image_format,
                dicom_pdff_scale,
                row["site"],
                study_date,
                (seed, i, 11),
                int(row["age"]),
                str(row["sex"]),
                scanners[i],
            )
        )
        lv = cohort.levels[pid]
        manifest_rows.append(
            {
                "patient_id": pid,
                "site": row["site"],
                "pdff": f"images/{pid}/pdff{ext}",
                "r2star": f"images/{pid}/r2star{ext}",
                "labels": f"images/{pid}/labels.nii.gz",
                "treated_levels": ";".join(lv["treated"]),
                "fractured_levels": ";".join(lv["fractured"]),
                # Declared, so extraction needs no config and guesses nothing.
                "field_strength_t": scanners[i].field_strength_t,
                "vendor": scanners[i].vendor,
                "scanner": scanners[i].name,
                "pdff_units": "percent" if image_format == "nifti" else dicom_pdff_scale,
                "r2star_units": "per_s",
            }
        )

    _run_jobs(jobs_list, jobs, progress)

    manifest = write_table(out_dir / "manifest.csv", pd.DataFrame(manifest_rows))
    clinical_path = write_table(out_dir / "clinical.csv", clinical)
    truth_csv = write_table(out_dir / "truth.csv", cohort.truth)
    info = truth_dict(cohort, seed)
    info["images"] = {"format": image_format, "dicom_pdff_scale": dicom_pdff_scale}
    truth_json = write_json(out_dir / "truth.json", info)
    return SynthResult(out_dir, manifest, clinical_path, truth_csv, truth_json, n, n_sites)


def _run_jobs(jobs_list: list[tuple], jobs: int, progress: Progress | None) -> None:
    total = len(jobs_list)
    tick = stage_ticker(progress, "synthesising images", total)
    if jobs == 1 or total == 1:
        for job in jobs_list:
            _write_patient(job)
            tick()
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for _ in pool.map(_write_patient, jobs_list, chunksize=2):
                tick()

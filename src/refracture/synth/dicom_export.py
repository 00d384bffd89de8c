"""``refracture synth --format dicom-export``: the synthetic cohort as a PACS export.

Each site's vendor writes its exams its own way, as hospitals export them:

* GE sites (IDEAL IQ): six classic series per exam - water, fat, in-phase, out-of-phase,
  fat fraction (integers 0-1000, no unit stated) and R2* (RescaleSlope 0.1, 1/s) - each in
  its own folder; the second GE site's files are compressed (JPEG-LS, JPEG 2000 and RLE
  lossless, one syntax per series) and all series of a study share one folder; the first
  patient's exam also holds the multi-echo source images;
* the Siemens site (q-Dixon): enhanced multi-frame objects, one file per series (fat fraction,
  R2*, water, fat), ImageType DIXON plus the map;
* the Philips site (mDIXON Quant): one classic series holding water, fat, fat fraction and T2*
  images, told apart by ImageType; the T2* values (ms) are given by a Real World Value Mapping
  whose slope is not the display RescaleSlope, and a private scale slope is present;
* every exam has a 3-plane localizer, and its vertebra label map as a DICOM SEG referring to
  the fat fraction series; a quarter of the patients have a second, follow-up exam after the
  procedure (without labels);
* folders and files have opaque names; optionally the whole export is a DICOMDIR file set.

The clinical table gains ``procedure_date``, ``treated_levels``, ``fractured_levels`` and
``dicom_patient_id`` (the PatientID of the export, the hospital's record number), which
``refracture index`` uses to pick the exam and link the patient.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from refracture.files import atomic_path
from refracture.synth.dicom import Identity
from refracture.synth.dicom_objects import (
    Scanner,
    SeriesSpec,
    classic_series,
    enhanced_series,
    label_segmentation,
)
from refracture.synth.phantom import Maps, PatientAnatomy, generate

__all__ = ["ExportJob", "second_exam", "write_patient_export"]

EXPORT = "export"
#: Share of patients with a follow-up exam after the procedure: assumption.
SECOND_EXAM_SHARE = 0.25
_COMPRESSION = (JPEGLSLossless, JPEG2000Lossless, RLELossless)


@dataclass(frozen=True)
class ExportJob:
    anatomy: PatientAnatomy
    out_dir: Path
    site_index: int
    scanner: Scanner
    identity: Identity
    exam_dates: tuple[dt.date, ...]  # the first before the procedure, then follow-ups
    source_images: bool  # also write the multi-echo source series (GE)
    grid: tuple | None = None  # another (shape, spacing) than the site's, e.g. for tests


def second_exam(rng: np.random.Generator) -> bool:
    return bool(rng.random() < SECOND_EXAM_SHARE)


def write_patient_export(job: ExportJob) -> list[str]:
    """Write one patient's exams; return the files written (relative to the export)."""
    maps = generate(job.anatomy, job.grid)
    written: list[str] = []
    for n, date in enumerate(job.exam_dates):
        identity = job.identity if n == 0 else _follow_up(job.identity, n)
        written += _write_exam(job, maps, identity, date, labels=n == 0, source=job.source_images
                               and n == 0)  # fmt: skip
    return written


def _follow_up(identity: Identity, n: int) -> Identity:
    seed = [identity.study_uid, str(n)]
    return replace(
        identity,
        study_uid=generate_uid(entropy_srcs=[*seed, "study"]),
        frame_uid=generate_uid(entropy_srcs=[*seed, "frame"]),
        accession=f"{identity.accession[:-2]}{n:02d}",
    )


def _write_exam(job, maps: Maps, identity: Identity, date, *, labels, source) -> list[str]:
    vendor = job.scanner.manufacturer.split()[0].upper()
    geometry = (maps.direction_lps, maps.origin_lps, maps.spacing)
    if vendor == "SIEMENS":
        specs = _siemens(maps)
    elif vendor == "PHILIPS":
        specs = _philips(maps)
    else:
        specs = _ge(maps, source)
    series = [classic_series(s, identity, job.scanner, date, geometry) for s in specs]
    objects: list[tuple[int, list[Dataset]]]
    if vendor == "PHILIPS":  # one series: the image types share its UID and numbering
        objects = [(specs[0].number, _one_series([x for s in series for x in s], identity))]
    elif vendor == "SIEMENS":
        objects = [(s.number, [enhanced_series(x, s)]) for s, x in zip(specs, series, strict=True)]
    else:
        objects = [(s.number, x) for s, x in zip(specs, series, strict=True)]
    objects.append((1, _localizer(identity, job.scanner, date)))
    if labels:
        pdff = _pdff_source(objects)
        objects.append((900, [label_segmentation(maps.labels, pdff, identity, 900)]))
    return _save(job, identity, objects)


def _ge(maps: Maps, source: bool) -> list[SeriesSpec]:
    p = np.clip(np.nan_to_num(maps.pdff), 0, 100)
    r2 = np.nan_to_num(maps.r2star)
    water, fat = (100 - p) * 8.0, p * 8.0
    desc = "Sag IDEAL-IQ"
    out = [
        SeriesSpec(f"WATER: {desc}", 601, ("DERIVED", "PRIMARY", "OTHER"), water),
        SeriesSpec(f"FAT: {desc}", 602, ("DERIVED", "PRIMARY", "OTHER"), fat),
        SeriesSpec(f"InPhase: {desc}", 603, ("DERIVED", "PRIMARY", "OTHER"), water + fat),
        SeriesSpec(f"OutPhase: {desc}", 604, ("DERIVED", "PRIMARY", "OTHER"), abs(water - fat)),
        SeriesSpec(f"FatFrac: {desc}", 605, ("DERIVED", "PRIMARY", "OTHER"), p * 10.0),
        SeriesSpec(f"R2*: {desc}", 606, ("DERIVED", "PRIMARY", "OTHER"), r2 * 10.0, slope=0.1),
    ]
    if source:  # the multi-echo source images, one series: 6 echoes at every position
        uid = generate_uid()
        for e in range(6):
            te = 1.2 + 0.9 * e
            signal = (water + fat) * np.exp(-r2 * te / 1000.0)
            out.append(SeriesSpec(desc, 6, ("ORIGINAL", "PRIMARY", "OTHER"), signal,
                                  echo=(e + 1, te), series_uid=uid,
                                  first_instance=1 + 100 * e))  # fmt: skip
    return out


def _siemens(maps: Maps) -> list[SeriesSpec]:
    p = np.clip(np.nan_to_num(maps.pdff), 0, 100)
    r2 = np.nan_to_num(maps.r2star)
    kind = ("DERIVED", "PRIMARY", "DIXON")
    percent = (0.1, 0.0, "%", "percent")
    return [
        SeriesSpec(
            "q-Dixon_sag_FF", 21, (*kind, "FAT_FRACTION"), p * 10.0, slope=0.1, real_world=percent
        ),  # fmt: skip
        SeriesSpec("q-Dixon_sag_R2star", 22, (*kind, "R2_STAR"), r2 * 10.0, slope=0.1),
        SeriesSpec("q-Dixon_sag_W", 23, (*kind, "WATER"), (100 - p) * 8.0),
        SeriesSpec("q-Dixon_sag_F", 24, (*kind, "FAT"), p * 8.0),
    ]


def _philips(maps: Maps) -> list[SeriesSpec]:
    p = np.clip(np.nan_to_num(maps.pdff), 0, 100)
    r2 = np.nan_to_num(maps.r2star)
    with np.errstate(divide="ignore"):
        t2 = np.where(r2 > 0, 1000.0 / np.maximum(r2, 1e-6), 0.0)  # 0: the fit failed
    desc, scale = "sag mDIXON-Quant", 0.0121  # scale: Philips private MR scale slope
    return [
        SeriesSpec(
            desc, 701, ("DERIVED", "PRIMARY", "W", "W"), (100 - p) * 8.0, private_scale_slope=scale
        ),  # fmt: skip
        SeriesSpec(
            desc, 701, ("DERIVED", "PRIMARY", "F", "F"), p * 8.0, private_scale_slope=scale
        ),  # fmt: skip
        SeriesSpec(
            desc,
            701,
            ("DERIVED", "PRIMARY", "FF", "FF"),
            p * 10.0,
            slope=0.1,
            real_world=(0.1, 0.0, "%", "percent"),
            private_scale_slope=scale,
        ),  # fmt: skip
        # T2* in 1/100 ms; the display scaling (RescaleSlope 1) is not the physical one
        SeriesSpec(
            desc,
            701,
            ("DERIVED", "PRIMARY", "T2_STAR", "T2_STAR"),
            np.minimum(t2 * 100.0, 32767),
            real_world=(0.01, 0.0, "ms", "millisecond"),
            private_scale_slope=scale,
        ),  # fmt: skip
    ]


def _one_series(slices: list[Dataset], identity: Identity) -> list[Dataset]:
    uid = generate_uid(entropy_srcs=[identity.study_uid, "mdixon"])
    for n, ds in enumerate(slices, start=1):
        ds.SeriesInstanceUID, ds.InstanceNumber = uid, n
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
            entropy_srcs=[uid, str(n)]
        )
    return slices


def _pdff_source(objects: list[tuple[int, list[Dataset]]]) -> list[Dataset]:
    """The fat fraction images a label map is drawn on (GE FatFrac series, Siemens FF object,
    Philips FF image type)."""
    for _, datasets in objects:
        ff = [d for d in datasets if {"FF", "FAT_FRACTION"} & set(d.get("ImageType", []))
              or str(d.get("SeriesDescription", "")).startswith("FatFrac")]  # fmt: skip
        if ff:
            return ff
    raise ValueError("the exam has no fat fraction series")


def _localizer(identity: Identity, scanner: Scanner, date: dt.date) -> list[Dataset]:
    """A 3-plane localizer: three single 2-D slices (not a map)."""
    out = []
    for n, (direction, where) in enumerate(
        [(np.eye(3), "AX"), (np.eye(3)[:, [0, 2, 1]], "COR"), (np.eye(3)[:, [1, 2, 0]], "SAG")]
    ):
        spec = SeriesSpec("3-Plane Loc", 1, ("ORIGINAL", "PRIMARY", "LOCALIZER"),
                          np.full((64, 64, 1), 100.0))  # fmt: skip
        geometry = (direction, np.array([-120.0, -120.0, -40.0 * n]), (3.75, 3.75, 8.0))
        uid = generate_uid(entropy_srcs=[identity.study_uid, "loc"])
        out += classic_series(replace(spec, series_uid=uid, first_instance=n + 1), identity,
                              scanner, date, geometry)  # fmt: skip
        out[-1].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER", where]
    return out


def _save(job: ExportJob, identity: Identity, objects: list[tuple[int, list[Dataset]]]):
    """Write the objects with opaque names, laid out as the site's PACS exports."""
    root = job.out_dir / EXPORT
    patient = _opaque(identity.patient_id)
    study = _opaque(identity.study_uid)
    written = []
    for number, datasets in objects:
        for ds in datasets:
            syntax = _COMPRESSION[number % 3] if job.site_index % 4 == 1 else None
            if syntax is not None and "PixelData" in ds and ds.SOPClassUID != _SEG:
                ds.compress(syntax)  # pydicom with pylibjpeg-openjpeg / pyjpegls / RLE
            series = _opaque(ds.SeriesInstanceUID)
            name = _opaque(ds.SOPInstanceUID)
            layout = {
                0: f"{patient}/{study}/{series}/{name}",  # one folder per series
                1: f"{patient}/{study}/{name}",  # every series of a study in one folder
                2: f"{study}/{series}/{name}",  # enhanced: one file per series
                3: f"{patient}/{name}",  # flat per patient
            }[job.site_index % 4]
            with atomic_path(root / layout) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
            written.append(layout)
    return written


_SEG = "1.2.840.10008.5.1.4.1.1.66.4"


def _opaque(text: str) -> str:
    return hashlib.sha256(f"refracture-export:{text}".encode()).hexdigest()[:10].upper()


# --- the cohort ----------------------------------------------------------------------------


def write_export(
    out_dir: Path, cohort, seed: int, jobs: int, progress, dicomdir: bool, result, grid=None
):
    """Write the cohort as a PACS export plus clinical.csv and the truth; see the module doc."""
    import pandas as pd

    from refracture.files import write_json, write_table
    from refracture.progress import stage_ticker
    from refracture.synth import STUDY_START, anatomy_of
    from refracture.synth.cohort import truth_dict

    clinical = cohort.clinical.copy()
    rng = np.random.default_rng([seed, 99])
    surgery = np.sort(rng.integers(0, 365, len(clinical)))
    rng_exam = np.random.default_rng([seed, 98])
    jobs_list, extra = [], []
    for i, pid in enumerate(clinical["patient_id"]):
        row = clinical.iloc[i]
        procedure = STUDY_START + dt.timedelta(days=int(surgery[i]))
        dates = [procedure - dt.timedelta(days=int(rng_exam.integers(1, 15)))]
        if second_exam(rng_exam):
            dates.append(procedure + dt.timedelta(days=int(rng_exam.integers(90, 300))))
        sc = cohort.scanners[i]
        identity = Identity.make(np.random.default_rng([seed, i, 11]), int(row["age"]),
                                 str(row["sex"]), dates[0])  # fmt: skip
        site = next(s for s in cohort.sites if s.name == row["site"])
        jobs_list.append(
            ExportJob(
                anatomy_of(cohort, i, seed),
                out_dir,
                site.index,
                Scanner(sc.manufacturer, sc.model, sc.software, sc.field_strength_t),
                identity,
                tuple(dates),
                source_images=i == 0,
                grid=grid,
            )
        )
        lv = cohort.levels[pid]
        extra.append(
            {
                "procedure_date": procedure.isoformat(),
                "treated_levels": ";".join(lv["treated"]),
                "fractured_levels": ";".join(lv["fractured"]),
                "dicom_patient_id": identity.patient_id,
            }
        )
    tick = stage_ticker(progress, "writing the PACS export", len(jobs_list))
    if jobs > 1 and len(jobs_list) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for _ in pool.map(write_patient_export, jobs_list, chunksize=1):
                tick()
    else:
        for job in jobs_list:
            write_patient_export(job)
            tick()
    if dicomdir:
        _as_file_set(out_dir / EXPORT)
    clinical = pd.concat([clinical, pd.DataFrame(extra, index=clinical.index)], axis=1)
    clinical_path = write_table(out_dir / "clinical.csv", clinical)
    truth_csv = write_table(out_dir / "truth.csv", cohort.truth)
    info = truth_dict(cohort, seed)
    info["images"] = {"format": "dicom-export", "dicomdir": dicomdir}
    truth_json = write_json(out_dir / "truth.json", info)
    n_sites = len({s.name for s in cohort.sites})
    return result(out_dir, None, clinical_path, truth_csv, truth_json, len(clinical), n_sites)


def _as_file_set(export: Path) -> None:
    """Rewrite the export as a DICOMDIR file set (pydicom: PT/ST/SE/IM folders, a DICOMDIR)."""
    import shutil

    from pydicom.fileset import FileSet

    fs = FileSet()
    for f in sorted(p for p in export.rglob("*") if p.is_file()):
        fs.add(f)
    staged = export.with_name(export.name + ".cd")
    if staged.exists():
        shutil.rmtree(staged)
    fs.write(staged)
    shutil.rmtree(export)
    staged.rename(export)

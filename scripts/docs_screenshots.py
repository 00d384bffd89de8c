"""The pictures of docs/scoring.md, from a real run: a risk card and the calculator.

After ``refracture demo --format dicom`` (or any folder with ``mlflow.db`` and a batch of new
patients), this scores one new patient with ``--cards``, starts the calculator on the batch's
features, and photographs both in headless Chromium: the card at A4 (794 x 1123 px, 96 dpi)
and the calculator opened on the same patient with a what-if across the T-score. Prints JSON.

    python scripts/docs_screenshots.py --workdir refracture-demo [--patient N0001]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pandas as pd

from refracture.features import extract_cohort
from refracture.features.manifest import read_manifest
from refracture.outputs import OutputOptions, write_outputs
from refracture.outputs.calculator import Calculator, make_server
from refracture.scoring import load_model, score

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--hide-scrollbars",
]
ROOT = Path(__file__).resolve().parents[1]


def screenshot(url: str, out: Path, width: int, height: int, profile: Path) -> Path:
    """A PNG of ``url`` at ``width`` x ``height`` CSS pixels, after its scripts ran."""
    binary = shutil.which("chromium") or shutil.which("google-chrome")
    if binary is None:
        raise SystemExit("no Chromium: install Debian's chromium package")
    cmd = [
        binary,
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--virtual-time-budget=15000",
        f"--screenshot={out}",
        url,
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("refracture-demo"))
    parser.add_argument("--batch", default="new_patients", help="folder of the new patients")
    parser.add_argument("--patient", default=None, help="patient shown (default: the first)")
    parser.add_argument("--model", default="models:/refracture-1y@champion")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    work = args.workdir.resolve()
    batch = work / args.batch
    model = load_model(args.model, f"sqlite:///{work / 'mlflow.db'}")
    manifest = read_manifest(batch / "manifest.csv")
    pid = args.patient or str(manifest.patient_id.iloc[0])
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = manifest[manifest.patient_id == pid].copy()
        one[["treated_levels", "fractured_levels"]] = one[
            ["treated_levels", "fractured_levels"]
        ].map(";".join)
        one.to_csv(tmp / "manifest.csv", index=False)
        result = score(
            model,
            manifest=tmp / "manifest.csv",
            clinical=batch / "clinical.csv",
            out=tmp / "scores.csv",
            cache_dir=work / ".refracture-cache",
        )
        write_outputs(result, result.data, OutputOptions(cards=tmp / "cards"))
        card = screenshot(
            (tmp / "cards" / f"{pid}.html").as_uri(),
            args.out / "card.png",
            794,
            1123,
            tmp / "profile",
        )

        feats = extract_cohort(
            manifest, model.bundle.extraction, cache_dir=work / ".refracture-cache"
        ).features
        clinical = pd.read_csv(batch / "clinical.csv", dtype={"patient_id": str})
        rows = clinical.merge(feats.drop(columns="site"), on="patient_id")
        server = make_server(Calculator(model, rows), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/?patient={pid}&vary=bmd_tscore"
            calc = screenshot(url, args.out / "calculator.png", 1200, 1250, tmp / "profile")
        finally:
            server.shutdown()
    print(
        json.dumps(
            {
                "patient": pid,
                "model": model.uri,
                "version": model.version,
                "label": model.label,
                "card": str(card),
                "calculator": str(calc),
                "risk_365d": float(result.scores.risk_365d.iloc[0]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""``refracture calculator``: the registered model as a web page on this computer."""

from __future__ import annotations

from pathlib import Path

import typer

from refracture.cli.app import app, console, handle_errors, out


@app.command()
@handle_errors
def calculator(
    model: str = typer.Option(
        ...,
        "--model",
        help="MLflow model URI: models:/refracture-1y@champion, models:/NAME/VERSION, "
        "runs:/RUN_ID/model or a local model folder.",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to serve on (127.0.0.1: this computer only)."
    ),
    port: int = typer.Option(5050, "--port", min=0, max=65535, help="Port (0: any free one)."),
    features: Path | None = typer.Option(
        None,
        "--features",
        help="Features file (CSV/Parquet) whose patients' values the page can load.",
    ),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
    ),
) -> None:
    """A web page serving the registered model: what-if risks for one patient.

    The model's covariates and imaging features are form fields with their units and ranges;
    the page shows the risk, its group, what raised or lowered it and how it changes across
    one value's range, computed as `refracture score` computes them. A value outside its
    plausible range is refused. Everything stays on this computer: the page loads nothing from
    elsewhere. Ctrl-C stops the server. See docs/scoring.md.
    """
    from refracture.errors import InputError
    from refracture.ids import PATIENT_ID, patient_ids
    from refracture.outputs.calculator import Calculator, make_server
    from refracture.scoring import load_model
    from refracture.tables import read_patient_table

    loaded = load_model(model, tracking_uri)
    rows = None
    if features is not None:
        categorical = list(loaded.inputs.categorical)
        table = read_patient_table(features, "features file", text_columns=categorical)
        table[PATIENT_ID] = patient_ids(table, "features file", features).to_numpy()
        keep = [c for c in [PATIENT_ID, *loaded.inputs.input_columns] if c in table]
        rows = table[keep].reset_index(drop=True)
    try:
        server = make_server(Calculator(loaded, rows), host, port)
    except OSError as err:
        raise InputError(f"cannot serve on {host}:{port} ({err.strerror or err})") from None
    address = f"http://{host}:{server.server_address[1]}/"
    out.print(
        f"calculator for {loaded.uri} (version {loaded.version}, {loaded.label}) at {address}"
        "\n  Ctrl-C stops it",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"[yellow]note:[/] served on {host}: anyone who can reach this address can use the "
            "page (it has no login)",
            highlight=False,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        out.print("calculator stopped", highlight=False)
    finally:
        server.server_close()

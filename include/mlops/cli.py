"""The `mlops` command: from a CSV or parquet file to a registered champion.

    mlops spec init DATA_FILE        draft a spec from a sample
    mlops spec check SPEC            validate a spec (and, with --data, a file against it)
    mlops ingest FILE --spec SPEC    land a file as daily batches and a label feed
    mlops run training --spec SPEC --date D
                                     run ml_training for one day on the embedded default
    mlops home rebase                after copying or moving MLOPS_HOME, rewrite the old path in it

Every mistake is one line saying what to change, and a non-zero exit status.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from include.mlops.spec import DatasetSpec

app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False)
spec_app = typer.Typer(help="Draft and check dataset specs.", no_args_is_help=True)
run_app = typer.Typer(help="Run the pipeline's DAGs locally.", no_args_is_help=True)
app.add_typer(spec_app, name="spec")
app.add_typer(run_app, name="run")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _home() -> Path:
    from include.mlops.config import get_settings

    return get_settings().home


def _load_spec(spec: str) -> DatasetSpec:
    """The spec SPEC names on the command line: a file (a path or a .yaml name), else an installed spec."""
    from include.mlops.spec import SpecError, is_spec_file_arg, load_spec, load_spec_file

    try:
        return load_spec_file(spec) if is_spec_file_arg(spec) else load_spec(spec)
    except SpecError as exc:
        _fail(str(exc))
        raise


@spec_app.command("init")
def spec_init(
    data_file: Annotated[Path, typer.Argument(help="A sample of the table: .csv, .csv.gz or .parquet")],
    name: Annotated[str | None, typer.Option(help="Dataset name (a slug); default: the file's name")] = None,
    label: Annotated[str | None, typer.Option(help="The label column")] = None,
    key: Annotated[str | None, typer.Option(help="The entity key column")] = None,
    time: Annotated[str | None, typer.Option(help="The event time column")] = None,
    task: Annotated[str | None, typer.Option(help="classification or regression; default: from the label")] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write the spec; default: <name>.yaml here")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing spec file")] = False,
) -> None:
    """Draft a spec from a sample: types, ranges, categories, key/time/label, training settings."""
    from include.mlops.data.draft import DraftError, draft_spec, read_table, to_yaml
    from include.mlops.spec import SpecError, _slug, parse_spec

    if task not in (None, "classification", "regression"):
        _fail(f"--task must be classification or regression, not {task!r}")
    stem = data_file.name.split(".")[0]
    spec_name = name or _slug(stem)
    fmt = "csv" if ".csv" in data_file.name.lower() else "parquet"
    try:
        draft = draft_spec(
            read_table(data_file), name=spec_name, source_format=fmt, label=label, key=key, time=time, task=task
        )
        parse_spec(draft.spec, f"draft of {data_file}")
    except (DraftError, SpecError) as exc:
        _fail(str(exc))
    target = out or Path(f"{spec_name}.yaml")
    if target.exists() and not force:
        _fail(f"{target} exists; pass --force to overwrite it or --out to write elsewhere")
    target.write_text(to_yaml(draft, str(data_file)))
    s = draft.spec
    typer.echo(f"wrote {target}: {s['task']}, {len(s['features'])} features, {draft.rows} rows over {draft.days} days")
    typer.echo(
        f"  key {s['entity']['key']} ({s['entity']['dtype']}), time {s['timestamp']}, label {s['label']['name']}"
    )
    for note in draft.notes:
        typer.echo(f"  note: {note}")
    typer.echo(f"next: mlops spec check {target} && mlops ingest {data_file} --spec {target}")


@spec_app.command("check")
def spec_check(
    spec: Annotated[str, typer.Argument(help="A spec file, or the name of an installed spec")],
    data: Annotated[Path | None, typer.Option(help="Also check that this file fits the spec")] = None,
) -> None:
    """Validate a spec; every problem names the field and the fix."""
    from include.mlops.data.draft import DraftError, read_table
    from include.mlops.data.ingest import IngestError, conform

    parsed = _load_spec(spec)
    typer.echo(
        f"{parsed.path}: ok: {parsed.name}, {parsed.task_kind}, {len(parsed.features)} features "
        f"({len(parsed.categorical_features)} categorical), key {parsed.entity_key} ({parsed.entity.dtype}), "
        f"primary metric {parsed.primary_metric}, model {parsed.model.family}"
    )
    typer.echo(f"  events land in {parsed.landing_prefix}/events/dt=YYYY-MM-DD/*.{parsed.source.format}")
    if parsed.labels_inline:
        typer.echo(f"  labels: inline, column {parsed.label} of the events files")
    else:
        typer.echo(
            f"  labels land in {parsed.label_spec.feed_prefix}/dt=YYYY-MM-DD/*.{parsed.source.format} "
            f"(by arrival day, {parsed.label_delay_days} day(s) after the event)"
        )
    if data is not None:
        try:
            frame = conform(read_table(data, parsed.source.csv_delimiter), parsed)
        except DraftError as exc:  # names the file itself
            _fail(str(exc))
        except IngestError as exc:
            _fail(f"{data}: {exc}")
        typer.echo(f"{data}: fits the spec ({len(frame)} rows)")


@app.command("ingest")
def ingest(
    file: Annotated[Path, typer.Argument(help="The table to land: .csv, .csv.gz or .parquet")],
    spec: Annotated[str, typer.Option(help="The spec file (it is installed in $MLOPS_HOME/specs) or its name")],
) -> None:
    """Land a file as daily event batches and a label feed, where ml_training reads them."""
    from include.mlops.config import get_settings
    from include.mlops.context import open_store
    from include.mlops.data.draft import DraftError, read_table
    from include.mlops.data.ingest import IngestError, install_spec, land
    from include.mlops.spec import SpecError
    from include.mlops.storage import ensure_bucket

    parsed = _load_spec(spec)
    try:
        frame = read_table(file, parsed.source.csv_delimiter)
        store = open_store(get_settings())
        ensure_bucket(store)
        landed = land(frame, parsed, store, file.name)  # checks the whole file before writing a day
        parsed_name = str(install_spec(Path(parsed.path), _home()))  # installed once its data fits
    except (SpecError, DraftError, IngestError) as exc:
        _fail(str(exc))
    typer.echo(f"spec installed: {parsed_name} (use it by name: {parsed.name})")
    typer.echo(f"{'day':<12}{'events':>8}{'labels':>8}  where")
    for d in landed:
        typer.echo(f"{d.day.isoformat():<12}{d.events:>8}{d.labels:>8}  {d.events_uri}")
    if landed:
        first, last = landed[0].day, landed[-1].day
        typer.echo(f"landed {sum(d.events for d in landed)} events over {len(landed)} days, {first} to {last}")
        typer.echo(f"next: mlops run training --spec {parsed.name} --date {last}")


@run_app.command("training")
def run_training(
    spec: Annotated[str, typer.Option(help="The spec's name (as installed by `mlops ingest`) or file")],
    date_: Annotated[str, typer.Option("--date", help="The day to train on (YYYY-MM-DD): its data interval")],
    backfill: Annotated[bool, typer.Option(help="First ingest the window's earlier days that have no features")] = True,
    train: Annotated[bool, typer.Option(help="--no-train ingests the day only")] = True,
) -> None:
    """Run ml_training for one day on the embedded default and say where its logs and results are."""
    from include.mlops.local.run_training import NoLandedData, describe
    from include.mlops.local.run_training import run_training as run
    from include.mlops.spec import is_spec_file_arg

    try:
        day = date.fromisoformat(date_)
    except ValueError:
        _fail(f"--date {date_!r} is not a date: write YYYY-MM-DD")
    parsed = _load_spec(spec)
    if is_spec_file_arg(spec):  # the DAG takes names only: install the file the user pointed at
        from include.mlops.data.ingest import install_spec

        install_spec(Path(parsed.path), _home())
    try:
        report = run(parsed.name, day, backfill=backfill, train=train, say=typer.echo)
    except NoLandedData as exc:
        _fail(str(exc))
    for line in describe(report, _home()):
        typer.echo(line)
    if not report.succeeded:
        raise typer.Exit(1)


home_app = typer.Typer(help="Copy or move a home (MLOPS_HOME).", no_args_is_help=True)
app.add_typer(home_app, name="home")


@home_app.command("rebase")
def home_rebase(
    home: Annotated[Path | None, typer.Option(help="The copied or moved home; default: MLOPS_HOME")] = None,
    from_: Annotated[
        Path | None, typer.Option("--from", help="Where the home was before; default: found in its MLflow database")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Count what would change, change nothing")] = False,
) -> None:
    """After copying or moving a home, point its MLflow, Feast and Airflow state at the new place."""
    from include.mlops.local.home import HomeMoveError, rebase

    try:
        report = rebase(home or _home(), from_, dry_run=dry_run)
    except HomeMoveError as exc:
        _fail(str(exc))
    for line in report.lines():
        typer.echo(line)


def main() -> None:
    from include.mlops.config import quiet_telemetry

    quiet_telemetry()
    app(prog_name="mlops")


if __name__ == "__main__":
    main()

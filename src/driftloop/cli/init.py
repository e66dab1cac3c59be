"""``driftloop init``: a project from a sample of your data, every guess said and written down."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from driftloop.cli.root import app, console, fail


@app.command()
def init(
    source: Annotated[
        Path, typer.Option("--from", help="A .csv (any of , ; tab |) or .parquet sample")
    ],
    target: Annotated[str, typer.Option(help="The column the model learns to predict")],
    task: Annotated[
        str | None,
        typer.Option(help="binary, multiclass or regression (default: guessed from the target)"),
    ] = None,
    into: Annotated[
        Path, typer.Option(help="The project folder to write (created if missing)")
    ] = Path("."),
    name: Annotated[
        str | None, typer.Option(help="The dataset's name (default: from the file's name)")
    ] = None,
    rows: Annotated[int, typer.Option(help="Read at most this many rows", min=1)] = 100_000,
    margin: Annotated[
        float, typer.Option(help="Widen observed ranges by this share of their width", min=0)
    ] = 0.5,
    force: Annotated[bool, typer.Option(help="Overwrite an existing driftloop.yaml")] = False,
) -> None:
    """Write driftloop.yaml and a dataset spec from a sample of your data; review them after."""
    from driftloop.spec_inference import InitError, infer_spec, project_files, read_sample, snake
    from driftloop.tasks import TASKS

    if task is not None and task not in TASKS:
        fail(f"--task {task!r}: choose {', '.join(TASKS)}")
    folder = into.resolve()
    project_file = folder / "driftloop.yaml"
    if project_file.exists() and not force:
        fail(f"{project_file} exists: review it, or pass --force to write a new one")
    dataset = snake(name or source.stem)
    console.print(f"reading {source} (at most {rows:,} rows) ...", highlight=False)
    try:
        frame = read_sample(source, rows)
        inferred = infer_spec(frame, name=dataset, target=target, task=task, margin=margin)  # type: ignore[arg-type]
    except InitError as error:
        fail(str(error))
    width = max(len(g.column) for g in inferred.guesses)
    for guess in inferred.guesses:
        console.print(
            f"  {guess.column:<{width}}  {guess.verdict:<12}  {guess.reason}",
            highlight=False,
            soft_wrap=True,
        )
    source_path = source.resolve()
    try:
        shown_source = os.path.relpath(source_path, folder)
    except ValueError:  # another drive
        shown_source = str(source_path)
    if shown_source.startswith(".."):
        shown_source = str(source_path)
    spec_name = f"{dataset}.yaml"
    suffix = {"regression": "regressor"}.get(inferred.task, "classifier")
    command = "driftloop " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    project_text, spec_text = project_files(
        inferred,
        model=f"{dataset.replace('_', '-')}-{suffix}",
        spec_file=spec_name,
        source=shown_source,
        command=command,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / spec_name).write_text(spec_text, encoding="utf-8")
    project_file.write_text(project_text, encoding="utf-8")
    console.print(
        f"wrote {project_file} ({inferred.task} model) and {folder / spec_name} from "
        f"{inferred.rows:,} rows: review both, then `driftloop up` in {folder}",
        highlight=False,
        soft_wrap=True,
    )

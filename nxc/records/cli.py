"""The run-record part of the command line: ``nxc runs [show ID]``, ``nxc publish``,
``nxc verify`` and ``nxc reproduce``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from nxc.errors import NxcError

project_option = click.option(
    "-p",
    "--project",
    "project_dir",
    metavar="DIR",
    help="Composition directory (default: nearest directory with a flake.nix).",
)


def _project(directory: str | None):  # type: ignore[no-untyped-def]
    from nxc.project import Project

    return Project.find(Path(directory) if directory else None)


@click.group("runs", invoke_without_command=True)
@project_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def runs_cmd(ctx: click.Context, project_dir: str | None, as_json: bool) -> None:
    """List the project's runs (one record per 'nxc start'), oldest first.

    \b
    Examples:
      nxc runs
      nxc runs show selftest-3f2a1c     # one run: phases, timings, results, files
    """
    ctx.ensure_object(dict)
    ctx.obj["project_dir"] = project_dir
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from nxc.records.summary import row_cells, run_row
    from nxc.runs import list_runs

    project = _project(project_dir)
    rows = [run_row(record, document) for record, document in list_runs(project)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no runs in {project.root} yet (nxc start makes one)")
        return
    table = Table(title=f"runs of {project.root}")
    for column in ("id", "composition", "flavour", "status", "started", "duration", "nodes"):
        table.add_column(column, justify="right" if column in ("duration", "nodes") else "left")
    for row in rows:
        table.add_row(*row_cells(row))
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


@runs_cmd.command("show")
@project_option
@click.option("--json", "as_json", is_flag=True, help="Print run.json as it is.")
@click.argument("run")
@click.pass_context
def runs_show(ctx: click.Context, project_dir: str | None, as_json: bool, run: str) -> None:
    """Summarise one run: what ran, phases and timings, each driver session's result,
    where the files are. RUN is a run id (or a unique prefix of one).

    \b
    Example:
      nxc runs show selftest-3f2a1c
    """
    from nxc.records.summary import show_lines
    from nxc.runs import find_run

    project = _project(project_dir or ctx.obj.get("project_dir"))
    record = find_run(project, run)
    document = record.load()
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    for line in show_lines(record, document):
        click.echo(line)


@click.command("publish")
@project_option
@click.option(
    "-o", "--output", type=click.Path(path_type=Path),
    help="Archive to write (default: ./RUN.zip).",
)  # fmt: skip
@click.option(
    "--with-closure", is_flag=True,
    help="Include the images' Nix closure (nix-store --export): they boot again unbuilt.",
)  # fmt: skip
@click.option(
    "--author", "authors", multiple=True, metavar="NAME",
    help="An author for CITATION.cff and the RO-Crate ('Family, Given'; repeatable).",
)  # fmt: skip
@click.option(
    "--license", "license_id", metavar="SPDX", help="License of the data, e.g. CC-BY-4.0."
)
@click.argument("run")
def publish_cmd(
    project_dir: str | None,
    output: Path | None,
    with_closure: bool,
    authors: tuple[str, ...],
    license_id: str | None,
    run: str,
) -> None:
    """Write one archive of a run, to publish next to a paper.

    The ZIP holds the run record, a README (what ran, with which inputs, how to
    reproduce it), CITATION.cff, RO-Crate metadata and SHA256SUMS; with
    --with-closure also the images' Nix closure. A record holding a private key,
    password or token is refused.

    \b
    Examples:
      nxc publish selftest-3f2a1c
      nxc publish selftest-3f2a1c -o paper-artifact.zip --with-closure \\
          --author "Lovelace, Ada" --license CC-BY-4.0
    """
    from nxc.records.publish import publish
    from nxc.runs import find_run

    record = find_run(_project(project_dir), run)
    target = output or Path(f"{record.id}.zip")
    click.echo(
        f"publishing run {record.id}" + (" with its closure" if with_closure else ""), err=True
    )
    done = publish(
        record, target, with_closure=with_closure, authors=list(authors), license_id=license_id
    )
    for note in done.notes:
        click.echo(f"note: {note}", err=True)
    closure = f", closure of {done.closure_paths} store paths" if with_closure else ""
    click.echo(f"wrote {done.path} ({done.size} bytes, {done.files} files{closure})")
    click.echo(f"archive digest (SHA-256 of SHA256SUMS): {done.digest}")


@click.command("verify")
@click.option(
    "--digest", metavar="SHA256",
    help="Also require this archive digest (as quoted in the paper).",
)  # fmt: skip
@click.argument("archive", type=click.Path(path_type=Path))
def verify_cmd(digest: str | None, archive: Path) -> None:
    """Check a published archive: every checksum, the schema of every record, the
    closure's store paths against their NAR hashes, and that it holds no secret.
    Each difference is one line naming the file; exits 1 if there is any.

    \b
    Examples:
      nxc verify selftest-3f2a1c.zip
      nxc verify artifact.zip --digest 5f1c…
    """
    from nxc.records.verify import verify

    report = verify(archive, digest)
    if not report.ok:
        for problem in report.problems:
            click.echo(f"  {problem}", err=True)
        raise NxcError(
            f"{archive}: {len(report.problems)} problem(s) found (listed above); "
            "the archive is not what was published"
        )
    closure = (
        f", {report.closure_paths} store paths in the closure match their NAR hashes"
        if report.closure_paths
        else ""
    )
    click.echo(f"verified {archive}: run {report.run_id}, {report.files} files intact{closure}")
    click.echo(f"archive digest: {report.digest}")


@click.command("reproduce")
@click.option(
    "-d", "--directory", type=click.Path(path_type=Path),
    help="Where to put the reproduced project (default: ./RUN-reproduced).",
)  # fmt: skip
@click.option(
    "--rebuild", is_flag=True,
    help="Rebuild the images from the recorded source even if the archive has a closure.",
)  # fmt: skip
@click.option(
    "--override-input", nargs=2, multiple=True, metavar="INPUT FLAKEREF",
    help="With a rebuild: take this flake input from elsewhere (passed to nix).",
)  # fmt: skip
@click.option("--keep", is_flag=True, help="Leave the deployment running afterwards.")
@click.argument("archive", type=click.Path(path_type=Path))
def reproduce_cmd(
    directory: Path | None,
    rebuild: bool,
    override_input: tuple[tuple[str, str], ...],
    keep: bool,
    archive: Path,
) -> None:
    """Start a published run again and rerun its scenarios.

    Verifies the archive, extracts the flake's source as a new project, imports the
    closure (or rebuilds), starts the same deployment with the same parameters,
    runs every recorded scenario and compares with the original; exits 1 if
    anything differs or a scenario fails.

    \b
    Examples:
      nxc reproduce selftest-3f2a1c.zip
      nxc reproduce artifact.zip -d /tmp/again --rebuild --keep
    """
    from nxc.records.reproduce import reproduce
    from nxc.records.verify import open_archive

    if directory is None:
        handle = open_archive(archive)
        try:
            directory = Path(f"{handle.top}-reproduced")
        finally:
            handle.close()
    done = reproduce(
        archive,
        directory.resolve(),
        rebuild=rebuild,
        override_inputs=override_input,
        keep=keep,
        say=lambda text: click.echo(f"  {text}", err=True),
    )
    images = "the same images" if done.same_images else "DIFFERENT images"
    click.echo(
        f"reproduced run {done.original} as {done.run_id} in {done.project} "
        f"({images}, from the {done.source})"
    )
    for difference in done.differences:
        click.echo(f"  differs: {difference}", err=True)
    for scenario in done.scenarios:
        verdict = "PASSED" if scenario.success else "FAILED"
        before = {True: "PASSED", False: "FAILED", None: "?"}[scenario.original]
        click.echo(f"  {scenario.script}: {verdict} (originally {before}, {scenario.session})")
    if keep:
        click.echo(f"still running: cd {done.project} && nxc stop")
    if not done.ok:
        raise NxcError(
            f"run {done.original} was not reproduced identically "
            f"({len(done.differences)} difference(s), "
            f"{sum(1 for s in done.scenarios if not s.success)} failed scenario(s))"
        )

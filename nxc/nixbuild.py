"""The Nix side of the CLI: list a flake's outputs, build one, explain failures.

Every nix call goes through :func:`run_nix`, which always enables flakes
(``--extra-experimental-features 'nix-command flakes'``) and reads nix's
structured log (``--log-format internal-json``) so that progress can be shown
and failures turned into one-line :class:`~nxc.errors.BuildError` messages:

- no ``nix`` on PATH                  -> :class:`~nxc.errors.ToolMissing`
- a nix without flakes                -> says which version is needed
- an input that cannot be fetched     -> names the input and how to
  ``--override-input NAME path:/local/dir``
- an output that does not exist       -> lists the ``composition::flavour`` outputs
- any other evaluation/build error    -> its first meaningful line, prefixed with the
  ``file:line:col`` nix gave, mapped back from the store copy to the user's file

Before nix copies a local flake (or a local input) into the world-readable store,
:func:`guard_sources` refuses one that holds a secret (:mod:`nxc.flakesource`). nix
runs in its own process group: Ctrl-C, SIGTERM and SIGHUP are forwarded to it and
nxc waits for it to stop its builders (:mod:`nxc.childproc`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nxc import childproc, flakesource
from nxc.compat import FLAVOUR_ALIASES
from nxc.errors import BuildError, ToolMissing
from nxc.paths import flake_root
from nxc.setup_toml import SetupChoice
from nxc.tools import require_tool

FEATURES = ["--extra-experimental-features", "nix-command flakes"]
SEPARATOR = "::"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NOISE = (
    "warning: Git tree",
    "warning: creating lock file",
    "warning: updating lock file",
    "warning: not writing modified lock file",
    "(use '--show-trace'",
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class NixMessage:
    """One error nix reported, with the source position it named (if any)."""

    text: str
    file: str | None = None
    line: int | None = None
    column: int | None = None


@dataclass(frozen=True)
class NixRun:
    """What one nix invocation printed: stdout, error messages and raw stderr."""

    returncode: int
    stdout: str
    messages: list[NixMessage]
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [m.text for m in self.messages]


@dataclass(frozen=True)
class BuildResult:
    output: str
    flake: Path
    out_path: Path
    manifest: Path
    out_link: Path | None
    drv_path: str | None = None
    locked_url: str | None = None
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    nix_version: str | None = None
    built_at: str = ""
    # What run records need to rebuild it: the lock nix used (flake.lock's
    # content), the flake's own source as nix copied it to the store, its NAR
    # hash, and the extra nix arguments and build-time values.
    lock: dict[str, Any] | None = None
    source_path: str | None = None
    source_nar_hash: str | None = None
    nix_args: tuple[str, ...] = ()
    parameters: dict[str, Any] | None = None
    setup: dict[str, Any] | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON-able record the project keeps of this build."""
        return {
            "output": self.output,
            "flake": str(self.flake),
            "locked_url": self.locked_url,
            "out_path": str(self.out_path),
            "manifest": str(self.manifest),
            "out_link": str(self.out_link) if self.out_link else None,
            "drv_path": self.drv_path,
            "inputs": self.inputs,
            "nix_version": self.nix_version,
            "built_at": self.built_at,
            "lock": self.lock,
            "source_path": self.source_path,
            "source_nar_hash": self.source_nar_hash,
            "nix_args": list(self.nix_args),
            "parameters": self.parameters,
            "setup": self.setup,
        }


def current_system() -> str:
    """The Nix system double of this machine (``x86_64-linux``…)."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    kernel = platform.system().lower()
    return f"{machine}-{kernel}"


def _strip(text: str) -> str:
    return _ANSI.sub("", text)


def _position(event: dict[str, Any]) -> tuple[str | None, int | None, int | None]:
    file, line, column = event.get("file"), event.get("line"), event.get("column")
    if not isinstance(file, str) or not file:
        return None, None, None
    return (
        file,
        line if isinstance(line, int) else None,
        column if isinstance(column, int) else None,
    )


def _parse_log(stderr: str, progress: Progress | None) -> tuple[list[NixMessage], list[str]]:
    """Split nix's internal-json stderr into error messages and other lines."""
    errors: list[NixMessage] = []
    other: list[str] = []
    for line in stderr.splitlines():
        if not line.startswith("@nix "):
            if line.strip():
                other.append(_strip(line))
            continue
        try:
            event = json.loads(line[5:])
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        action = event.get("action")
        if action == "msg" and event.get("level", 9) == 0:
            errors.append(NixMessage(_strip(str(event.get("msg", ""))), *_position(event)))
        elif action == "start" and progress is not None:
            text = _strip(str(event.get("text", "")))
            if text.startswith(("building ", "copying ", "downloading ", "fetching ")):
                progress(text)
    return errors, other


def nix_binary() -> str:
    return require_tool("nix")


def run_nix(
    args: Sequence[str],
    cwd: Path | None = None,
    progress: Progress | None = None,
    env: dict[str, str] | None = None,
) -> NixRun:
    """Run ``nix ARGS`` with flakes enabled; never raises on a non-zero exit.

    Ctrl-C, SIGTERM and SIGHUP stop nix cleanly (no orphaned builder, no build
    directory left) and then raise :class:`~nxc.childproc.ChildInterrupted`.
    """
    nix = nix_binary()
    argv = [nix, *FEATURES, "--log-format", "internal-json", *args]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)

    def on_line(line: str) -> None:
        if progress is not None and line.startswith("@nix "):
            _parse_log(line, progress)

    try:
        done = childproc.run(argv, cwd=cwd, env=full_env, on_stderr_line=on_line, what="nix")
    except FileNotFoundError:
        raise ToolMissing(
            "required tool 'nix' not found on PATH (install it: apt-get install nix-bin)"
        ) from None
    except PermissionError as exc:
        raise ToolMissing(f"cannot run nix ({nix}): {exc.strerror}") from None
    errors, other = _parse_log(done.stderr, None)
    return NixRun(done.returncode, done.stdout, errors, "\n".join(other))


def nix_version() -> str | None:
    try:
        done = subprocess.run(
            [nix_binary(), "--version"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", done.stdout)
    return match.group(1) if match else None


def flake_ref(flake_dir: Path) -> str:
    """A flake reference for a local directory (git work trees are detected by nix)."""
    return str(flake_dir.resolve())


def _attr(output: str) -> str:
    return f'"{output}"' if "." in output else output


# --- error translation -----------------------------------------------------------


def declared_inputs(flake_dir: Path) -> dict[str, str]:
    """Input name -> URL as flake.nix declares them (nested ``a/b`` for ``a.inputs.b``).

    Read without locking or fetching anything, to name the input a failed fetch
    was about.
    """
    expr = (
        "let f = import (builtins.toPath " + json.dumps(str(flake_dir / "flake.nix")) + "); "
        "ins = f.inputs or {}; "
        "url = v: if builtins.isString v then v "
        'else if builtins.isAttrs v then (v.url or (if v ? follows then "follows " + '
        '(if builtins.isList v.follows then builtins.concatStringsSep "/" v.follows '
        'else v.follows) else "")) else ""; '
        "in builtins.foldl' (acc: n: acc // { ${n} = url ins.${n}; } // "
        "(if builtins.isAttrs ins.${n} && ins.${n} ? inputs then builtins.listToAttrs "
        '(map (m: { name = n + "/" + m; value = url ins.${n}.inputs.${m}; }) '
        "(builtins.attrNames ins.${n}.inputs)) else {})) {} (builtins.attrNames ins)"
    )
    try:
        run = run_nix(["eval", "--json", "--impure", "--expr", expr])
    except ToolMissing:
        return {}
    if run.returncode != 0:
        return {}
    try:
        value = json.loads(run.stdout)
    except json.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


_FETCH_FAILURE = re.compile(
    r"unable to download '([^']+)'|unable to access '([^']+)'|cannot download|"
    r"Could not resolve host|Couldn't resolve host|Failed to connect|"
    r"is not allowed in offline mode|in offline mode|"
    r"cannot (?:look up|fetch|query) .*(?:offline|'([^']+)')",
    re.IGNORECASE,
)


def _url_keys(url: str) -> list[str]:
    """Fragments that identify a flake URL inside a download error."""
    keys: list[str] = []
    match = re.match(r"(github|gitlab|sourcehut):([^/]+)/([^/?#]+)", url)
    if match:
        keys.append(f"{match.group(2)}/{match.group(3)}".lower())
    stripped = re.sub(r"^(git\+|path:|file\+)", "", url).split("?")[0].rstrip("/")
    stripped = re.sub(r"\.git$", "", stripped)
    if "://" in stripped:
        keys.append(stripped.split("://", 1)[1].lower())
    return keys


def _fetch_failure(text: str, flake_dir: Path) -> str | None:
    if not _FETCH_FAILURE.search(text):
        return None
    lowered = text.lower()
    declared = declared_inputs(flake_dir)
    for name, url in declared.items():
        if url.startswith("follows") or not url:
            continue
        if any(key and key in lowered for key in _url_keys(url)):
            return (
                f"input '{name}' ({url}) cannot be fetched: this machine seems offline. "
                f"Use a local copy instead: nxc build --override-input {name} path:/abs/dir"
                + (
                    f" (or add `inputs.{name.replace('/', '.inputs.')}.follows = ...` to flake.nix)"
                    if "/" in name
                    else ""
                )
            )
    names = ", ".join(n for n, u in declared.items() if u and not u.startswith("follows"))
    first = _first_line(text) or "a download failed"
    hint = f"; inputs declared: {names}" if names else ""
    return (
        f"an input cannot be fetched ({first}): this machine seems offline. "
        f"Use a local copy: nxc build --override-input NAME path:/abs/dir{hint}"
    )


def _first_line(text: str) -> str:
    """The first line of a nix error that says something (not a trace frame)."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_NOISE) or line.startswith(("at ", "…", "... ")):
            continue
        if line.startswith("error:"):
            line = line[len("error:") :].strip()
            if not line:
                continue
        elif line.startswith("warning:"):
            continue
        return line
    return ""


def _explain(
    run: NixRun,
    flake_dir: Path,
    output: str | None,
    action: str,
    extra_args: Sequence[str] = (),
) -> BuildError:
    text = "\n".join([*run.errors, run.stderr])
    if re.search(r"experimental Nix feature '(flakes|nix-command)' is disabled", text) or re.search(
        r"unrecogni[sz]ed (flag|option) '--(extra-)?experimental-features'", text
    ):
        version = nix_version() or "unknown"
        return BuildError(
            f"this nix ({version}) cannot use flakes; nxc needs Nix >= 2.8 with the "
            "'nix-command flakes' features (Debian 12: apt-get install nix-bin)"
        )
    if "does not provide attribute" in text and output is not None:
        try:
            available = _list_outputs(flake_dir, extra_args=extra_args)
        except BuildError:
            available = []
        listed = ", ".join(available) if available else "none"
        return BuildError(
            f"the flake in {flake_dir} has no output '{output}' (available: {listed})"
        )
    fetch = _fetch_failure(text, flake_dir)
    if fetch is not None:
        return BuildError(fetch)
    missing = re.search(r"getting status of '/nix/store/[^/']+-source/([^']+)': No such file", text)
    if missing and (flake_dir / missing.group(1)).exists():
        return BuildError(
            f"{missing.group(1)} exists but nix cannot see it: in a git work tree a flake only "
            f"sees tracked files (run: git -C {flake_dir} add {missing.group(1)})"
        )
    if re.search(r"path '[^']*/flake\.nix' does not exist|does not contain a 'flake\.nix'", text):
        return BuildError(f"{flake_dir}: no flake.nix here (create one with: nxc init -t basic)")
    first, where = _first_error(run, flake_dir)
    if first.startswith("builder for"):
        drv = re.search(r"'(/nix/store/[^']+\.drv)'", first)
        hint = f" (see: nix log {drv.group(1)})" if drv else ""
        return BuildError(f"{action} failed: {first}{hint}")
    return BuildError(f"{action} failed: {where}{first}")


def _first_error(run: NixRun, flake_dir: Path) -> tuple[str, str]:
    """The first meaningful error line and its ``file:line:col: `` prefix ('' if none)."""
    for message in run.messages:
        first = _first_line(message.text)
        if first:
            return first, _location(message, flake_dir)
    return _first_line(run.stderr) or "nix failed", ""


_STORE_SOURCE = re.compile(r"^/nix/store/[0-9a-z]{32}-[^/]*source/(.+)$")


def _location(message: NixMessage, flake_dir: Path) -> str:
    """``file:line:col: `` for a message nix located, naming the user's own file.

    nix reports positions in its store copy of the flake
    (``/nix/store/…-source/composition.nix``); the user edits the original, so the
    copy is mapped back to the file with the same content in the flake directory
    (or a directory above it, for a flake inside a larger git repository, or nxc's
    own flake).
    """
    if message.file is None:
        return ""
    shown = message.file
    match = _STORE_SOURCE.match(message.file)
    if match:
        relative = match.group(1)
        bases = [flake_dir, *list(flake_dir.parents)[:4], flake_root()]
        for base in bases:
            if _same_content(base / relative, Path(message.file)):
                shown = str(base / relative)
                break
    if message.line:
        shown += f":{message.line}"
        if message.column:
            shown += f":{message.column}"
    return f"{shown}: "


def _same_content(candidate: Path, stored: Path) -> bool:
    try:
        return candidate.is_file() and candidate.read_bytes() == stored.read_bytes()
    except OSError:
        return False


# --- public API ---------------------------------------------------------------------


def guard_sources(flake_dir: Path, extra_args: Sequence[str] = ()) -> None:
    """Refuse, before nix copies anything, a flake or local input that holds a secret.

    See :mod:`nxc.flakesource`: the flake's own directory, ``--override-input`` paths
    and the local inputs flake.nix declares are checked.
    """
    flakesource.check(flakesource.source_of(flake_dir), f"the flake in {flake_dir}")
    args = list(extra_args)
    overridden: list[tuple[str, str]] = []
    for i, arg in enumerate(args):
        if arg == "--override-input" and i + 2 < len(args):
            overridden.append((args[i + 1], args[i + 2]))
    names = {name for name, _ in overridden}
    declared = [
        (name, url)
        for name, url in declared_inputs(flake_dir).items()
        if name not in names and not url.startswith("follows")
    ]
    flakesource.check_inputs([*overridden, *declared], flake_dir, trusted=[flake_root()])


def list_outputs(
    flake_dir: Path, system: str | None = None, extra_args: Sequence[str] = ()
) -> list[str]:
    """The ``composition::flavour`` packages the flake provides for this system.

    Only the names are evaluated: nothing is built and nixpkgs is not forced.
    Aliases kept for NixOS Compose flakes (``c::vm`` next to ``c::vm-ramdisk``) are
    left out.
    """
    guard_sources(flake_dir, extra_args)
    return _list_outputs(flake_dir, system, extra_args)


def _list_outputs(
    flake_dir: Path, system: str | None = None, extra_args: Sequence[str] = ()
) -> list[str]:
    system = system or current_system()
    apply = f"ps: builtins.attrNames (ps.{json.dumps(system)} or {{}})"
    args = [*_metadata_args(extra_args), "--json", f"{flake_ref(flake_dir)}#packages"]
    run = run_nix(["eval", *args, "--apply", apply], cwd=flake_dir)
    if run.returncode != 0:
        if "does not provide attribute" not in "\n".join(run.errors) + run.stderr:
            raise _explain(run, flake_dir, None, "listing the flake's outputs", extra_args)
        names: object = []
    else:
        names = _json(run.stdout)
    found = _outputs_in(names)
    if not found:
        # A flake whose outputs *are* lib.compose's result (`outputs = …: nxc.lib.compose
        # { … }`) has the composition::flavour attributes at its top level.
        found = _outputs_in(_top_level_names(flake_dir, extra_args))
    return hide_aliases(found)


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise BuildError(f"nix eval printed something that is not JSON: {text[:80]!r}") from None


def _outputs_in(names: object) -> list[str]:
    if not isinstance(names, list):
        return []
    return sorted(n for n in names if isinstance(n, str) and SEPARATOR in n)


def _top_level_names(flake_dir: Path, extra_args: Sequence[str]) -> object:
    expr = f"builtins.attrNames (builtins.getFlake {json.dumps(flake_ref(flake_dir))}).outputs"
    offline = ["--offline"] if "--offline" in extra_args else []
    run = run_nix(["eval", "--json", "--impure", *offline, "--expr", expr], cwd=flake_dir)
    if run.returncode != 0:
        raise _explain(run, flake_dir, None, "listing the flake's outputs", extra_args)
    return _json(run.stdout)


def hide_aliases(outputs: list[str]) -> list[str]:
    """Drop ``c::ALIAS`` when ``c::FLAVOUR`` it stands for is there too."""
    present = set(outputs)
    kept = []
    for output in outputs:
        composition, _, flavour = output.partition(SEPARATOR)
        target = FLAVOUR_ALIASES.get(flavour)
        if target is not None and f"{composition}{SEPARATOR}{target}" in present:
            continue
        kept.append(output)
    return kept


def default_output(flake_dir: Path, flavour: str, extra_args: Sequence[str] = ()) -> str:
    """The output to build for ``flavour`` when the user did not say (``-C``)."""
    outputs = list_outputs(flake_dir, extra_args=extra_args)
    matching = [o for o in outputs if o.endswith(f"{SEPARATOR}{flavour}")]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        listed = ", ".join(outputs) if outputs else "none"
        raise BuildError(
            f"the flake in {flake_dir} has no output for flavour '{flavour}' (available: {listed})"
        )
    preferred = f"composition{SEPARATOR}{flavour}"
    if preferred in matching:
        return preferred
    raise BuildError(
        f"the flake in {flake_dir} has several compositions for '{flavour}': choose one with "
        f"-C ({', '.join(matching)})"
    )


def default_out_link(flake_dir: Path, output: str) -> Path:
    composition, _, flavour = output.partition(SEPARATOR)
    return flake_dir / f"result-{composition}-{flavour}" if flavour else flake_dir / "result"


def locked_inputs(
    flake_dir: Path, extra_args: Sequence[str] = ()
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """The flake's locked URL and its inputs' locked references (``nix flake metadata``)."""
    guard_sources(flake_dir, extra_args)
    return _locked_inputs(flake_dir, extra_args)


def flake_metadata(flake_dir: Path, extra_args: Sequence[str] = ()) -> dict[str, Any] | None:
    """``nix flake metadata --json`` of a local flake, or None if nix could not say."""
    args = ["flake", "metadata", "--json", *_metadata_args(extra_args), flake_ref(flake_dir)]
    run = run_nix(args, cwd=flake_dir)
    if run.returncode != 0:
        return None
    try:
        meta = json.loads(run.stdout)
    except json.JSONDecodeError:
        return None
    return meta if isinstance(meta, dict) else None


def _locked_inputs(
    flake_dir: Path, extra_args: Sequence[str] = (), meta: dict[str, Any] | None = None
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    meta = meta if meta is not None else flake_metadata(flake_dir, extra_args)
    if meta is None:
        return None, {}
    nodes = meta.get("locks", {}).get("nodes", {})
    root = meta.get("locks", {}).get("root", "root")
    inputs: dict[str, dict[str, Any]] = {}
    for name, node in nodes.items():
        if name == root or not isinstance(node, dict) or "locked" not in node:
            continue
        inputs[name] = {"locked": node["locked"], "original": node.get("original", {})}
    url = meta.get("url") or meta.get("resolvedUrl")
    return (str(url) if url else None), inputs


def _metadata_args(extra_args: Sequence[str]) -> list[str]:
    """The subset of build flags that `nix flake metadata` understands."""
    kept: list[str] = []
    args = list(extra_args)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--override-input" and i + 2 < len(args):
            kept += args[i : i + 3]
            i += 3
            continue
        if arg in ("--offline", "--show-trace", "--impure"):
            kept.append(arg)
        i += 1
    return kept


def build(
    flake_dir: Path,
    output: str,
    out_link: Path | None = None,
    extra_args: Sequence[str] = (),
    progress: Progress | None = None,
    parameters: dict[str, Any] | None = None,
    setup: SetupChoice | None = None,
) -> BuildResult:
    """``nix build FLAKE#OUTPUT``; returns where the result and its manifest are.

    ``extra_args`` are passed to nix (``--show-trace``, ``--offline``,
    ``--override-input NAME REF``…). ``parameters`` overrides composition
    parameters for this build: they are written to a JSON file named by
    ``NXC_PARAMETERS_FILE``. ``setup`` selects a setup.toml variant and overrides its
    params (``NXC_SETUP_VARIANT``, ``NXC_SETUP_PARAMS``). Either makes the evaluation
    ``--impure``; the values used end up in the manifest, which is public (in the Nix
    store): a value holding a private key is refused.
    """
    flake_dir = flake_dir.resolve()
    if not (flake_dir / "flake.nix").is_file():
        raise BuildError(f"{flake_dir}: no flake.nix here (create one with: nxc init -t basic)")
    guard_sources(flake_dir, extra_args)
    overrides = {"parameters": parameters or {}, "setup": setup.params if setup else {}}
    leaking = flakesource.private_values(overrides)
    if leaking:
        raise BuildError(
            f"{leaking[0].replace('.', ' ', 1)} holds a private key: build values are "
            "recorded in the manifest, in the world-readable Nix store; pass secrets to the "
            "nodes another way"
        )
    out_link = out_link or default_out_link(flake_dir, output)
    args = ["build", "--json", "--out-link", str(out_link), *extra_args]
    env: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="nxc-params-") as tmp:
        if parameters:
            params_file = Path(tmp) / "parameters.json"
            params_file.write_text(json.dumps(parameters))
            env["NXC_PARAMETERS_FILE"] = str(params_file)
        if setup is not None:
            env.update(setup.environment())
        if env and "--impure" not in args:
            args.append("--impure")
        args.append(f"{flake_ref(flake_dir)}#{_attr(output)}")
        run = run_nix(args, cwd=flake_dir, progress=progress, env=env)
    if run.returncode != 0:
        raise _explain(run, flake_dir, output, f"building {output}", extra_args)
    try:
        built = json.loads(run.stdout)
        entry = built[0]
        out_path = Path(entry["outputs"]["out"])
    except (json.JSONDecodeError, LookupError, TypeError):
        raise BuildError(f"nix build printed unexpected output: {run.stdout[:120]!r}") from None
    manifest = out_path / "manifest.json"
    if not manifest.is_file():
        raise BuildError(
            f"{output} built {out_path}, which has no manifest.json: is it an nxc composition "
            "output (made by nxc.lib.compose)?"
        )
    if progress is not None:
        progress("reading the flake's locked inputs")
    meta = flake_metadata(flake_dir, extra_args) or {}
    locked_url, inputs = _locked_inputs(flake_dir, extra_args, meta)
    locks = meta.get("locks")
    locked = meta.get("locked")
    return BuildResult(
        output=output,
        flake=flake_dir,
        out_path=out_path,
        manifest=manifest,
        out_link=out_link,
        drv_path=entry.get("drvPath"),
        locked_url=locked_url,
        inputs=inputs,
        nix_version=nix_version(),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        lock=locks if isinstance(locks, dict) else None,
        source_path=str(meta["path"]) if isinstance(meta.get("path"), str) else None,
        source_nar_hash=(
            str(locked["narHash"])
            if isinstance(locked, dict) and isinstance(locked.get("narHash"), str)
            else None
        ),
        nix_args=tuple(extra_args),
        parameters=parameters or None,
        setup={"variant": setup.variant, "params": setup.params} if setup else None,
    )

"""Mutation testing of the pure cores (``make mutation``): how many planted bugs the tests catch.

Runs mutmut (pinned in the test extras) over each pure core in turn, the core's mutants against
the core's own fast tests only, then prints a per-module table, the surviving mutants (each with
the reason it is accepted, from ``tests/mutation/survivors.md``, or marked UNEXPLAINED) and one
last line ``MUTATION killed=K total=N``. A mutant counts as killed when a test fails on it or
when it makes the tests run out of time (an endless loop is caught too).

Each core has its own mutmut work folder, ``build/mutation/<core>/``, holding links to the
sources and tests and mutmut's cache (``mutants/``): an interrupted run carries on where it
stopped, a changed function has its mutants tested again, and when a core's tests change its
surviving mutants are tested again against them. ``--fresh`` (or ``make mutation-clean``)
starts from nothing.

The verdicts are also kept in the repository, ``tests/mutation/record.json`` (per core and
file: each function's source hash, as mutmut computes it, and the exit code of each of its
mutants), written after every run. A new checkout (a fresh machine, CI) starts from it: a
mutant whose function is unchanged keeps its verdict, a changed function's mutants are
tested again, and when the core's tests differ from those the record was made with, its
survivors are tested again. A whole run takes hours on two cores; the record lets it be
done in parts, on different machines. ``--fresh`` ignores the record.

The shared mutmut settings are in ``pyproject.toml`` (``[tool.mutmut]``); the cores, their
files and their tests are the table ``CORES`` below. Usage::

    python tests/mutation/run.py [--jobs 2] [--core rules ...] [--with-analysis] [--report] [--fresh]
    python tests/mutation/run.py --diffs [--core rules]   # what the unexplained survivors change
    python tests/mutation/run.py --save-record [--core codec]  # keep an interrupted run's verdicts
    python tests/mutation/run.py --core flow --only 'firmware_bridge.flow.*_check_epochs__*'  # again, these
    python tests/mutation/run.py --core analysis --untested  # only those not yet tested, in parts
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "build" / "mutation"
SURVIVORS = ROOT / "tests" / "mutation" / "survivors.md"
RECORD = ROOT / "tests" / "mutation" / "record.json"


@dataclass(frozen=True)
class Core:
    """One pure core: the package holding it, the files mutated and the tests run against them."""

    name: str
    package: str  # the top-level package mutmut copies (the core's files are inside it)
    files: tuple[str, ...]  # glob patterns of the files mutated, relative to the repository
    tests: tuple[str, ...]  # glob patterns of the test files run, relative to the repository
    # tests that read the core's source text (import layering): mutmut's rewritten files import
    # mutmut itself, so these fail on every mutant and say nothing about the behaviour
    deselect: tuple[str, ...] = ()


CORES = (
    Core("codec", "firmware_bridge", ("firmware_bridge/codec.py",), ("tests/firmware_bridge/test_codec*.py",)),
    Core("validate", "firmware_bridge", ("firmware_bridge/validate.py",), ("tests/firmware_bridge/test_validate*.py",)),
    Core("flow", "firmware_bridge", ("firmware_bridge/flow.py",), ("tests/firmware_bridge/test_flow*.py",)),
    Core("fields", "firmware_bridge", ("firmware_bridge/fields.py",), ("tests/firmware_bridge/test_fields*.py",)),
    Core("rules", "app", ("app/rules/*.py",), ("tests/rules/test_*.py",),
         ("tests/rules/test_rules_misc.py::test_the_package_imports_only_what_its_docstring_allows",)),
    Core("alarms", "app", ("app/alarms/*.py",), ("tests/alarms/test_*.py",),
         ("tests/alarms/test_alarm_layering.py",)),
)
# The measurement of epochs, EMG streams and recordings: slower tests, run on request only.
ANALYSIS = Core("analysis", "app", ("app/analysis/*.py",), ("tests/analysis/test_*.py",))

# mutmut's exit codes, as it records them per mutant (mutmut/stats.py)
# (-11: the tests crashed, a segmentation fault in compiled code handed a wrong buffer;
# -9: killed one second after the CPU limit's SIGXCPU, or for memory: both stop the tests)
KILLED_CODES = {1, 3, -11}
TIMEOUT_CODES = {36, -24, 24, 152, 255, -9}
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}
SKIPPED_CODES = {34}


def core_files(core: Core) -> list[str]:
    """The core's source files, relative to the repository."""
    return sorted({str(p.relative_to(ROOT)) for pattern in core.files for p in ROOT.glob(pattern)})


def core_tests(core: Core) -> list[str]:
    """The core's test files, relative to the repository (less the files deselected whole)."""
    found = {str(p.relative_to(ROOT)) for pattern in core.tests for p in ROOT.glob(pattern)}
    return sorted(found - set(core.deselect))


def tests_digest(core: Core) -> str:
    """A hash of everything the core's tests are made of (test files, helpers beside them, conftest)."""
    folders = {(ROOT / t).parent for t in core_tests(core)}
    paths = sorted({p for f in folders for p in f.glob("*.py")} | {ROOT / "tests" / "conftest.py"})
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def prepare_workdir(core: Core, fresh: bool) -> Path:
    """The core's mutmut folder: links to the package, the tests and pyproject.toml, and the cache."""
    work = WORK / core.name
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in (core.package, "tests", "pyproject.toml"):
        link = work / name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(ROOT / name, work))
    return work


def load_record() -> dict[str, Any]:
    """The verdicts kept in the repository (``RECORD``): ``{core: {"tests_sha256": ..., "files":
    {path: {function: {"hash": ..., "codes": [exit code or None of mutant 1, 2, ...]}}}}}``."""
    if not RECORD.exists():
        return {}
    try:
        data = json.loads(RECORD.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{RECORD.relative_to(ROOT)}: cannot be read ({exc}); "
                         "delete it (the mutants are then all tested again) or restore it from git") from None
    cores = data.get("cores") if isinstance(data, dict) else None
    if not isinstance(cores, dict):
        raise SystemExit(f"{RECORD.relative_to(ROOT)}: no \"cores\" table; delete it or restore it from git")
    return cores


def _mutant_key(path: str, function: str, number: int) -> str:
    return f"{path.removesuffix('.py').replace('/', '.')}.{function}__mutmut_{number}"


def seed_from_record(work: Path, core: Core) -> int:
    """Give a new work folder the verdicts of the record (mutmut keeps those whose function
    hash still matches); returns how many verdicts were seeded."""
    kept = load_record().get(core.name)
    if not isinstance(kept, dict):
        return 0
    seeded = 0
    for path, meta in zip(core_files(core), meta_paths(work, core), strict=True):
        functions = kept.get("files", {}).get(path)
        if meta.exists() or not isinstance(functions, dict):
            continue
        codes: dict[str, int | None] = {}
        hashes: dict[str, str] = {}
        for function, entry in functions.items():
            hashes[function] = str(entry["hash"])
            for number, code in enumerate(entry["codes"], start=1):
                codes[_mutant_key(path, function, number)] = code
                seeded += code is not None
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": hashes,
                                    "type_check_error_by_key": {}, "durations_by_key": {},
                                    "estimated_durations_by_key": {}}))
    if seeded and isinstance(kept.get("tests_sha256"), str):
        (work / "tests.sha256").write_text(kept["tests_sha256"] + "\n")
    return seeded


def save_record(cores: list[Core]) -> None:
    """Write the verdicts of the cores' work folders into ``RECORD`` (other cores kept)."""
    record = load_record()
    for core in cores:
        work = WORK / core.name
        stamp = work / "tests.sha256"
        files: dict[str, dict[str, Any]] = {}
        for path, meta in zip(core_files(core), meta_paths(work, core), strict=True):
            if not meta.exists():
                continue
            data = json.loads(meta.read_text())
            functions: dict[str, dict[str, Any]] = {}
            for function, digest in sorted(data["hash_by_function_name"].items()):
                prefix = _mutant_key(path, function, 0).removesuffix("0")
                numbers = {int(k.removeprefix(prefix)): code for k, code in data["exit_code_by_key"].items()
                           if k.startswith(prefix) and k.removeprefix(prefix).isdigit()}
                functions[function] = {"hash": digest,
                                       "codes": [numbers.get(i) for i in range(1, max(numbers, default=0) + 1)]}
            files[path] = functions
        if files:
            record[core.name] = {"tests_sha256": stamp.read_text().strip() if stamp.exists() else None,
                                 "files": files}
    lines = ["{", '  "about": "verdicts of make mutation (tests/mutation/run.py): per core and file, each '
             'function\'s mutmut hash and the exit code of its mutants 1, 2, ... (null: not yet tested)",',
             '  "cores": {']
    for i, (name, kept) in enumerate(sorted(record.items())):
        lines.append(f'    {json.dumps(name)}: {{"tests_sha256": {json.dumps(kept.get("tests_sha256"))}, "files": {{')
        file_items = sorted(kept["files"].items())
        for j, (path, functions) in enumerate(file_items):
            lines.append(f"      {json.dumps(path)}: {{")
            fn_items = list(functions.items())
            for k, (function, entry) in enumerate(fn_items):
                comma = "," if k < len(fn_items) - 1 else ""
                lines.append(f"        {json.dumps(function)}: {json.dumps(entry, separators=(',', ':'))}{comma}")
            lines.append("      }" + ("," if j < len(file_items) - 1 else ""))
        lines.append("    }}" + ("," if i < len(record) - 1 else ""))
    lines += ["  }", "}", ""]
    RECORD.write_text("\n".join(lines))


def meta_paths(work: Path, core: Core) -> list[Path]:
    """mutmut's per-file result files for the core."""
    return [work / "mutants" / (f + ".meta") for f in core_files(core)]


def retest_survivors_if_tests_changed(work: Path, core: Core) -> int:
    """When the core's tests changed since the last run, forget the verdicts a better test can change.

    mutmut itself keeps a surviving mutant's verdict until its function changes; a new test
    that kills it would go unnoticed. Killed mutants stay killed (tests only get stronger here;
    ``--fresh`` measures everything again).
    """
    stamp = work / "tests.sha256"
    digest = tests_digest(core)
    old = stamp.read_text().strip() if stamp.exists() else None
    reset = 0
    if old is not None and old != digest:
        for meta in meta_paths(work, core):
            if not meta.exists():
                continue
            data = json.loads(meta.read_text())
            for key, code in data["exit_code_by_key"].items():
                if code is not None and code not in KILLED_CODES | TIMEOUT_CODES:
                    data["exit_code_by_key"][key] = None
                    reset += 1
            meta.write_text(json.dumps(data, indent=4))
    stamp.write_text(digest + "\n")
    return reset


def run_core_in_this_process(core: Core, jobs: int, only: tuple[str, ...] = ()) -> None:
    """Run mutmut for one core (called in a child process whose working folder is the core's)."""
    import mutmut.__main__ as mutmut_main
    from hypothesis import Phase, settings
    from mutmut.configuration import config

    # The profile CI uses (tests/conftest.py: the same 100 examples for every mutant, no example
    # database) without shrinking: a mutant is killed by the first failing example; making that
    # example small helps a person reading a failure, not the verdict. The mutant processes are
    # forked from this one, so they know the profile.
    settings.register_profile("mutation", deadline=None, derandomize=True, max_examples=100,
                              phases=(Phase.explicit, Phase.reuse, Phase.generate))
    cfg = config()
    cfg.pytest_add_cli_args = [*cfg.pytest_add_cli_args, "--hypothesis-profile=mutation"]
    cfg.source_paths = [Path(core.package)]
    cfg.resolved_mutated_source_paths = [Path.cwd().resolve(strict=True) / "mutants" / core.package]
    cfg.only_mutate = core_files(core)
    cfg.pytest_add_cli_args_test_selection = [*core_tests(core), *(f"--deselect={t}" for t in core.deselect)]
    # The test selection grows when tests are added: that must not throw away every verdict
    # (mutmut collects statistics for the new tests itself; run.py retests the survivors).
    fingerprint = cfg.config_fingerprint()
    fingerprint["test_selection"] = hashlib.sha256(core.name.encode()).hexdigest()[:12]
    object.__setattr__(cfg, "config_fingerprint", lambda: fingerprint)
    # fastest tests first (tests/mutation/fastest_first.py): sooner killed, the same verdicts,
    # so it is left out of the fingerprint (the record's verdicts stay valid)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    cfg.pytest_add_cli_args = [*cfg.pytest_add_cli_args, "-p", "fastest_first"]
    mutmut_main._run(only, jobs)


def print_diffs(core: Core) -> None:
    """Print the change each unexplained surviving mutant of a core makes (in the core's folder)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    accepted = load_accepted()
    for path in core_files(core):
        meta = Path("mutants") / (path + ".meta")
        if not meta.exists():
            continue
        for key, code in sorted(json.loads(meta.read_text())["exit_code_by_key"].items()):
            if status(code) in ("survived", "no tests", "suspicious") and key not in accepted:
                print(f"# {key}: {status(code)}")
                print(get_diff_for_mutant(key, path=path))


def run_core(core: Core, jobs: int, fresh: bool, only: tuple[str, ...] = (), untested: bool = False) -> float:
    """Run one core's mutants in a child process; returns the seconds it took."""
    work = prepare_workdir(core, fresh)
    seeded = 0 if fresh else seed_from_record(work, core)
    # (a run of chosen mutants, or of the untested ones only, leaves the other survivors and the
    # tests' stamp alone: the next whole run tests them again against the changed tests)
    reset = 0 if only or untested else retest_survivors_if_tests_changed(work, core)
    print(f"== {core.name}: {', '.join(core_files(core))} against {len(core_tests(core))} test files"
          + (f" ({seeded} verdicts from {RECORD.relative_to(ROOT)})" if seeded else "")
          + (f" ({reset} earlier survivors tested again)" if reset else ""), flush=True)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", core.name, "--jobs", str(jobs),
         *(f"--only={pattern}" for pattern in only)],
        cwd=work, check=False,
    )
    elapsed = time.monotonic() - start
    save_record([core])  # what was tested is kept, even when the run was cut short
    if result.returncode != 0:
        raise SystemExit(f"mutation run of {core.name} failed (exit status {result.returncode}); "
                         f"run it again to carry on, or see build/mutation/{core.name}/")
    print(f"== {core.name}: {elapsed:.0f} s", flush=True)
    return elapsed


def load_accepted() -> dict[str, str]:
    """The accepted survivors: ``- `mutant name`: reason`` lines of tests/mutation/survivors.md."""
    accepted: dict[str, str] = {}
    if SURVIVORS.exists():
        for line in SURVIVORS.read_text().splitlines():
            m = re.match(r"^\s*[-*]\s+`([^`]+)`\s*:?\s*(.*)$", line)
            if m:
                accepted[m.group(1)] = m.group(2).strip()
    return accepted


def status(code: int | None) -> str:
    """The verdict of a mutmut exit code."""
    if code is None:
        return "unchecked"
    if code in KILLED_CODES:
        return "killed"
    if code in TIMEOUT_CODES:
        return "timeout"
    if code in SURVIVED_CODES:
        return "survived"
    if code in NO_TESTS_CODES:
        return "no tests"
    if code in SKIPPED_CODES:
        return "skipped"
    return "suspicious"


def report(cores: list[Core]) -> int:
    """Print the per-module table, the survivors and the last line; returns the exit status."""
    accepted = load_accepted()
    rows: list[tuple[str, Counter[str]]] = []
    survivors: list[tuple[str, str]] = []
    verdicts: dict[str, str] = {}
    for core in cores:
        work = WORK / core.name
        for path, meta in zip(core_files(core), meta_paths(work, core), strict=True):
            if not meta.exists():
                rows.append((path, Counter()))
                continue
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            counts = Counter(status(code) for code in codes.values())
            rows.append((path, counts))
            verdicts.update((key, status(code)) for key, code in codes.items())
            survivors += [(key, status(code)) for key, code in sorted(codes.items())
                          if status(code) in ("survived", "no tests", "suspicious")]
    total = Counter[str]()
    print()
    print(f"{'module':34} {'killed':>7} {'timeout':>7} {'survived':>8} {'no tests':>8} {'total':>6} {'score':>6}")
    for path, counts in rows:
        total += counts
        n = sum(counts.values()) - counts["skipped"]
        k = counts["killed"] + counts["timeout"]
        score = f"{100 * k / n:5.1f}%" if n else "   -  "
        print(f"{path:34} {counts['killed']:7} {counts['timeout']:7} {counts['survived'] + counts['suspicious']:8} "
              f"{counts['no tests']:8} {n:6} {score:>6}")
    print()
    unexplained = [(k, s) for k, s in survivors if k not in accepted]
    print(f"surviving mutants: {len(survivors)}, accepted with a reason: {len(survivors) - len(unexplained)}"
          f" (tests/mutation/survivors.md; `mutmut show NAME` in build/mutation/<core>/ shows one)")
    for key, st in survivors:
        reason = accepted.get(key)
        print(f"  {key} [{st}]: {reason}" if reason else f"  {key} [{st}]: UNEXPLAINED")
    # an accepted survivor the tests now kill, or a mutant that no longer exists (one not yet
    # tested is neither)
    prefixes = tuple(f.removesuffix(".py").replace("/", ".") for c in cores for f in core_files(c))
    for key in sorted(k for k in accepted if k.startswith(prefixes)):
        if verdicts.get(key) in ("killed", "timeout"):
            print(f"  {key}: listed as accepted but now killed (remove it from survivors.md)")
        elif key not in verdicts and any(k.startswith(key.split("__mutmut_")[0]) for k in verdicts):
            print(f"  {key}: listed as accepted but no such mutant (remove it from survivors.md)")
    if total["unchecked"]:
        print(f"INCOMPLETE: {total['unchecked']} mutants not yet tested; run again to carry on")
    killed = total["killed"] + total["timeout"]
    n = sum(total.values()) - total["skipped"]
    print(f"MUTATION killed={killed} total={n}")
    return 1 if total["unchecked"] else 0


def main(argv: list[str] | None = None) -> int:
    """Run the mutation testing of the chosen cores (all by default) and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [c.name for c in (*CORES, ANALYSIS)]
    parser.add_argument("--core", action="append", choices=names, help="run only this core (repeatable)")
    parser.add_argument("--with-analysis", action="store_true", help="include app/analysis (slower tests)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--report", action="store_true", help="only print the report of the last runs")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results and test every mutant")
    parser.add_argument("--diffs", action="store_true", help="print the change each unexplained survivor makes")
    parser.add_argument("--save-record", action="store_true",
                        help=f"only write the verdicts of the work folders into {RECORD.relative_to(ROOT)}")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="test again only the mutants whose names match (fnmatch pattern, e.g. "
                             "'app.rules.engine.*_reference__*'; repeatable; with one --core), "
                             "whatever their earlier verdict")
    parser.add_argument("--untested", action="store_true",
                        help="test only the mutants not yet tested (earlier survivors keep their verdicts "
                             "until a whole run, even when the tests changed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    by_name = {c.name: c for c in (*CORES, ANALYSIS)}
    if args.child:
        run_core_in_this_process(by_name[args.child], args.jobs, tuple(args.only))
        return 0
    if args.diffs:
        for core in [by_name[n] for n in (args.core or [c.name for c in CORES])]:
            if (WORK / core.name / "mutants").exists():
                os.chdir(WORK / core.name)
                print_diffs(core)
        return 0
    if args.core:
        cores = [by_name[n] for n in args.core]
    else:
        cores = [*CORES, *([ANALYSIS] if args.with_analysis else [])]
    if args.save_record:
        save_record([c for c in cores if (WORK / c.name).exists()])
        print(f"verdicts written to {RECORD.relative_to(ROOT)}")
    elif not args.report:
        if args.only and len(cores) != 1:
            parser.error("--only needs exactly one --core")
        elapsed = sum(run_core(core, args.jobs, args.fresh, tuple(args.only), args.untested) for core in cores)
        print(f"== mutation run: {elapsed / 60:.1f} min with {args.jobs} jobs")
    return report(cores)


if __name__ == "__main__":
    sys.exit(main())

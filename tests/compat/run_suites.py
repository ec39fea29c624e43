"""Run Starlette's and FastAPI's own test suites with ``nea.testing.Client`` as their test client.

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python tests/compat/run_suites.py                  # both suites, nea's client
    .venv/bin/python tests/compat/run_suites.py --client both    # also Starlette's own client
    .venv/bin/python tests/compat/run_suites.py --suite starlette -- -k stream   # extra pytest args

    # before/after: another checkout of nea (its C extension built in place) vs this one
    mkdir /tmp/nea-before && git archive main | tar -x -C /tmp/nea-before
    (cd /tmp/nea-before && "$OLDPWD/.venv/bin/python" setup.py build_ext --inplace)
    .venv/bin/python tests/compat/run_suites.py --nea-src /tmp/nea-before/src --label before-
    .venv/bin/python tests/compat/run_suites.py --label after-

What it does, each step skipped when already done:

1. Reads the versions of Starlette and FastAPI installed in the interpreter running it.
2. Creates ``build/compat/venv`` and installs nea (editable, from this checkout), those exact
   versions of Starlette and FastAPI, and the packages their test suites import
   (``SUITE_REQUIREMENTS`` below).
3. Downloads the two source distributions (``pip download --no-binary :all: --no-deps``),
   which contain the test suites, and unpacks them under ``build/compat/``.
4. Runs each suite with pytest in that venv, with ``nea_compat_plugin`` (this directory)
   loaded first: it replaces ``starlette.testclient.TestClient`` with nea's ``Client``
   (``--client starlette`` runs the same command without the swap, for comparison).
5. Prints, per suite and client, how many tests passed, failed and were skipped, and writes
   the failing test ids with their first error line to
   ``build/compat/<label><suite>-<client>-failures.txt``.

Nothing fetched is copied into the repository: ``build/`` is ignored by git.
Needs network (or a package index) for steps 2 and 3. Runs for several minutes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import venv
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "build" / "compat"
VENV = WORK / "venv"
PLUGIN_DIR = Path(__file__).resolve().parent

# What the suites import beyond their own package (from their pyproject's test groups),
# minus tools (coverage, linters, docs builders, codspeed). Starlette's tests import
# ``httpx2`` (a fork of httpx that Starlette's own TestClient prefers); nea's client is
# built on httpx, so under nea the tests get ``httpx.Response`` objects.
SUITE_REQUIREMENTS = {
    "starlette": [
        # zstd: test_request_headers expects it in accept-encoding, which httpx2 sends
        # with httpx2[zstd] and httpx (nea's client) with zstandard.
        "httpx2[zstd]",
        "zstandard",
        "itsdangerous",
        "jinja2",
        "python-multipart>=0.0.18",
        "pyyaml",
        "trio",
        "opentelemetry-sdk",
        "importlib-metadata",
    ],
    "fastapi": [
        "a2wsgi",
        "dirty-equals",
        "email-validator",
        "flask",
        "httpx2",
        "inline-snapshot",
        "itsdangerous",
        "jinja2",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-fastapi",
        "pwdlib[argon2]",
        "pydantic-extra-types",
        "pydantic-settings",
        "pyjwt",
        "python-multipart>=0.0.18",
        "python-slugify",
        "pyyaml",
        "sentry-sdk",
        "sqlmodel",
        "strawberry-graphql",
        "trio",
        "typer",
        "logfire",
        "uvicorn",  # the debugging tutorial's tests import it
        # Its tests carry ``xdist_group`` marks and the suite runs with ``--strict-markers``:
        # without pytest-xdist every module that uses the mark fails to collect.
        "pytest-xdist",
    ],
}


TOOLS = ["pytest", "pytest-timeout"]


def run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(versions: dict[str, str]) -> None:
    stamp = VENV / ".nea-compat"
    wanted = repr(sorted(versions.items())) + repr(SUITE_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    if not venv_python().exists():
        venv.create(VENV, with_pip=True)
    pins = [f"{name}=={version}" for name, version in versions.items()]
    extras = sorted({req for reqs in SUITE_REQUIREMENTS.values() for req in reqs})
    # nea's own test extras are not wanted: pytest-asyncio, for one, changes how the
    # suites' async tests run.
    run([str(venv_python()), "-m", "pip", "install", "--quiet", "-e", f"{REPO}[testing]"])
    run([str(venv_python()), "-m", "pip", "install", "--quiet", *TOOLS, *pins, *extras])
    stamp.write_text(wanted)


def ensure_suite(name: str, version: str) -> Path:
    root = WORK / f"{name}-{version}"
    if (root / "tests").is_dir():
        return root
    archive = WORK / f"{name}-{version}.tar.gz"
    if not archive.exists():
        run(
            [
                str(venv_python()),
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                "--dest",
                str(WORK),
                f"{name}=={version}",
            ]
        )
    with tarfile.open(archive) as tar:
        tar.extractall(WORK, filter="data")
    return root


def run_suite(
    root: Path, name: str, client: str, extra: list[str], nea_src: Path | None, label: str
) -> Path:
    report = WORK / f"{label}{name}-{client}.xml"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PLUGIN_DIR)
    if nea_src is not None:
        env["PYTHONPATH"] += os.pathsep + str(nea_src)
    env["NEA_COMPAT_CLIENT"] = client
    cmd = [str(venv_python()), "-m", "pytest", "tests", "-p", "nea_compat_plugin", "-q"]
    # A stuck test must not stall the run; -x is never wanted here.
    cmd += ["-p", "no:cacheprovider", "--timeout", "60", f"--junitxml={report}", *extra]
    print(f"+ (cd {root}; NEA_COMPAT_CLIENT={client} {' '.join(cmd)})", flush=True)
    subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, check=False)
    return report


def summarize(report: Path, name: str, client: str, label: str) -> str:
    """Count tests, not junit entries: a test that errors at teardown after its call
    failed has two entries, and counts once (failed if any of its phases failed)."""
    outcomes: dict[str, str] = {}
    failures: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome = next((child for child in case if child.tag in ("failure", "error")), None)
        if outcome is not None:
            outcomes[test_id] = "failed"
            message = (outcome.get("message") or "").strip().splitlines()
            failures.setdefault(test_id, message[0][:200] if message else outcome.tag)
        elif case.find("skipped") is not None:
            outcomes.setdefault(test_id, "skipped")
        else:
            outcomes.setdefault(test_id, "passed")
    counts = {kind: list(outcomes.values()).count(kind) for kind in ("passed", "failed", "skipped")}
    listing = WORK / f"{label}{name}-{client}-failures.txt"
    listing.write_text("".join(f"{test}  {why}\n" for test, why in sorted(failures.items())))
    total = counts["passed"] + counts["failed"]
    return (
        f"{name:9} {client:9} client: {counts['passed']} of {total} passed, "
        f"{counts['failed']} failed ({counts['skipped']} skipped); "
        f"failures in {listing.relative_to(REPO)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=["starlette", "fastapi", "all"], default="all")
    parser.add_argument("--client", choices=["nea", "starlette", "both"], default="nea")
    parser.add_argument(
        "--nea-src",
        type=Path,
        help="the src directory of another nea checkout to run instead of this one (e.g. "
        "one made with `git worktree add` for a before/after comparison; its C extension "
        "must be built in place, `python setup.py build_ext --inplace`)",
    )
    parser.add_argument(
        "--label", default="", help="a prefix for the report files (e.g. before-, after-)"
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args()
    suites = ["starlette", "fastapi"] if args.suite == "all" else [args.suite]
    clients = ["nea", "starlette"] if args.client == "both" else [args.client]
    versions = {name: importlib.metadata.version(name) for name in ("starlette", "fastapi")}
    WORK.mkdir(parents=True, exist_ok=True)
    ensure_venv(versions)
    lines = []
    for name in suites:
        root = ensure_suite(name, versions[name])
        for client in clients:
            report = run_suite(root, name, client, args.pytest_args, args.nea_src, args.label)
            lines.append(summarize(report, name, client, args.label))
    print()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

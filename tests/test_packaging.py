"""Packaging: ranges in pyproject.toml for library users, the exact tested versions in
constraints.txt, and a Makefile / CI script that install with those constraints and run the slow and
browser tests. Reference: ``packaging``'s own requirement and specifier parsing."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]


def _dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in project["dependencies"] + [r for group in extras.values() for r in group]]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = version
    return pins


def test_pyproject_gives_ranges_not_exact_pins():
    deps = _dependencies()
    assert {canonicalize_name(r.name) for r in deps} >= {"torch", "torchaudio", "soundfile", "librosa", "pytest", "captum"}
    for r in deps:
        assert not any(s.operator in ("==", "===") for s in r.specifier), f"pyproject.toml pins {r} exactly"
        assert any(s.operator == ">=" for s in r.specifier), f"pyproject.toml: {r} has no lower bound"


def test_constraints_pin_every_dependency_inside_its_range():
    pins = _pins()
    assert "audioconv" not in pins  # pip refuses to constrain the project it installs from a path
    for r in _dependencies():
        name = canonicalize_name(r.name)
        assert name in pins, f"constraints.txt has no pin for {r.name}"
        assert r.specifier.contains(pins[name], prereleases=True), f"{r.name}=={pins[name]} is outside {r.specifier}"


def test_makefile_installs_with_the_constraints_and_ci_runs_every_marker():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    lines = [line.split("#", 1)[0] for line in makefile.splitlines()]
    pip_lines = [line for line in lines if "pip install" in line and "--upgrade pip" not in line]
    assert pip_lines and sum("$(PIP) " in line for line in lines) >= 3, "the Makefile installs nothing with $(PIP)"
    for line in pip_lines:
        assert "-c $(CONSTRAINTS)" in line or "-c constraints.txt" in line, line
    assert re.search(r"^CONSTRAINTS\s*:=\s*constraints\.txt$", makefile, re.M)
    stamps = re.findall(r"^\$\(STAMP\w*\):(.*)$", makefile, re.M)
    assert len(stamps) >= 2 and all("$(CONSTRAINTS)" in deps and "pyproject.toml" in deps for deps in stamps)
    for target in ("demo", "test", "test-cuda", "test-slow", "test-browser", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile lost its {target} target"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "set -euo pipefail" in ci
    for command in ("make test", "make test-slow", "make test-browser"):
        assert re.search(rf"\b{command}(\s|$)", ci), f".ci/run does not run {command}"

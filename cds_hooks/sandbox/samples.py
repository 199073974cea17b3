"""The sample patients (``samples/patients/*.json``): listing with a one-line description, and loading.

The folder is ``$CRAMP_SANDBOX_SAMPLES`` when set, else ``samples/patients`` of the source checkout. The
description comes from the ``samples/README.md`` table (first sentence of "what it exercises"), falling back to
the Patient's name and id.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_hooks.sandbox.requests_builder import SandboxError, entries_of, find_patient

ENV_SAMPLES = "CRAMP_SANDBOX_SAMPLES"
_ROW = re.compile(r"^\|\s*`(?P<file>[^`]+\.json)`\s*\|\s*`(?P<id>[^`]*)`\s*\|(?P<what>[^|]*)\|")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


@dataclass(frozen=True)
class Sample:
    name: str  # file name without .json
    path: Path
    patient_id: str
    patient_name: str
    description: str

    def to_dict(self) -> dict:
        return {"name": self.name, "patientId": self.patient_id, "patientName": self.patient_name,
                "description": self.description}


def samples_dir() -> Path:
    env = os.environ.get(ENV_SAMPLES, "").strip()
    return Path(env) if env else Path(__file__).resolve().parents[2] / "samples" / "patients"


def _readme_descriptions(folder: Path) -> dict[str, str]:
    readme = folder.parent / "README.md"
    try:
        lines = readme.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        m = _ROW.match(line)
        if m:
            text = re.sub(r"[*`]", "", m.group("what")).strip()
            first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
            out[m.group("file")] = first if len(first) <= 120 else first[:119].rstrip() + "…"
    return out


def _name_of(patient: dict) -> str:
    for name in patient.get("name") or []:
        if isinstance(name, dict):
            if isinstance(name.get("text"), str):
                return name["text"]
            given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
            family = name.get("family") if isinstance(name.get("family"), str) else ""
            if given or family:
                return f"{given} {family}".strip()
    return ""


def list_samples(folder: Path | None = None) -> list[Sample]:
    folder = folder or samples_dir()
    descriptions = _readme_descriptions(folder)
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            patient = find_patient(entries_of(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
        name = _name_of(patient)
        out.append(Sample(name=path.stem, path=path, patient_id=patient["id"], patient_name=name,
                          description=descriptions.get(path.name) or name or patient["id"]))
    return out


def find_sample(name: str, folder: Path | None = None) -> Sample:
    """A sample by file name (with or without ``.json``) or by patient id; :class:`SandboxError` if none."""
    samples = list_samples(folder)
    key = name.removesuffix(".json")
    if _NAME.match(key):
        for s in samples:
            if key in (s.name, s.patient_id):
                return s
    known = ", ".join(s.name for s in samples) or f"none found in {folder or samples_dir()}"
    raise SandboxError(f"unknown sample {name!r} (samples: {known})")


def load_sample(name: str, folder: Path | None = None) -> Any:
    return json.loads(find_sample(name, folder).path.read_text(encoding="utf-8"))


def load_bundle(arg: str, folder: Path | None = None) -> Any:
    """A Bundle file path, or a sample name (CLI only: the web API takes names, never paths)."""
    path = Path(arg)
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SandboxError(f"cannot read {arg}: {exc}") from None
    return load_sample(arg, folder)

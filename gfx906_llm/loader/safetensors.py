"""Hugging Face safetensors checkpoints (single file or sharded with an index), memory-mapped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's ``*.safetensors`` files (from ``model.safetensors.index.json`` if present).

    Raises:
        ValueError: no safetensors file, or an index naming a missing shard (names the file).
    """
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index}: malformed safetensors index ({e})") from None
        files = [folder / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise ValueError(f"{index}: names shard {f.name}, which is missing")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder}: no *.safetensors weights (only safetensors checkpoints are supported)")
    return files


def iter_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor, read lazily from memory-mapped files.

    Raises:
        ValueError: a file that is not valid safetensors (names it).
    """
    from safetensors import safe_open

    for path in files:
        try:
            f = safe_open(str(path), framework="pt")
        except Exception as e:  # safetensors raises SafetensorError
            raise ValueError(f"{path}: not a valid safetensors file ({e})") from None
        with f:
            for name in f.keys():
                yield name, f.get_tensor(name)

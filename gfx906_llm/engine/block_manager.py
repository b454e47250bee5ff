"""Paged KV-cache block allocation (torch-free).

The cache holds ``num_blocks`` blocks of ``block_size`` tokens (vLLM's PagedAttention, Kwon et
al. 2023). A request owns a list of block ids, its block table row; token ``t`` of the request
lives in slot ``blocks[t // block_size] * block_size + t % block_size``.
"""

from __future__ import annotations

from collections import deque


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1:
            raise ValueError(f"the KV cache has {num_blocks} blocks; it needs at least 1 (raise the KV budget)")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: deque[int] = deque(range(num_blocks))
        self._blocks: dict[str, list[int]] = {}

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use, 0..1."""
        return 1.0 - len(self._free) / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def get_block_ids(self, request_id: str) -> list[int]:
        return self._blocks.get(request_id, [])

    def allocate_slots(self, request_id: str, num_tokens: int) -> bool:
        """Make the request's blocks cover ``num_tokens`` tokens; False (nothing changed) if the
        free blocks do not suffice."""
        blocks = self._blocks.setdefault(request_id, [])
        need = self.blocks_needed(num_tokens) - len(blocks)
        if need <= 0:
            return True
        if need > len(self._free):
            if not blocks:
                del self._blocks[request_id]
            return False
        blocks.extend(self._free.popleft() for _ in range(need))
        return True

    def free(self, request_id: str) -> None:
        """Return the request's blocks (unknown ids are ignored)."""
        for b in self._blocks.pop(request_id, ()):
            self._free.append(b)

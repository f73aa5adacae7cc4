"""Prefix trie over document-identifier token sequences, stored as flat tensors for vectorised decoding.

SE-DSI (Tang et al. 2023) identifies a document by an Elaborative Description (ED): a short generated
query, tokenised and terminated by EOS. Retrieval decodes an ED with beam search restricted to a prefix
trie over all EDs; `TrieLogitsProcessor` applies that restriction to every beam of a batch at once.

Layout (no Python object per node). Node 0 is the root. Every edge parent -> child with token t has the
key ``parent * key_base + t``; the keys of all edges are kept in one sorted int64 tensor. Nodes are
numbered level by level in key order, so the child of edge ``i`` is node ``i + 1`` and a lookup is one
`torch.searchsorted`. Because keys sort by parent first, the children of node ``n`` are the contiguous
edge range ``offsets[n]:offsets[n + 1]`` (CSR), with their tokens in ``child_tokens``. A sequence is
stored with its EOS, and the node reached by an EOS edge is a leaf. The trie is a set: a sequence added
twice is stored once.

Example::

    >>> trie = IdTrie.build([[5, 6], [5, 7, 8], [9]], eos_id=2)
    >>> len(trie), trie.depth
    (3, 4)
    >>> trie.allowed_mask(trie.walk(torch.tensor([[5], [9]])), vocab_size=10).nonzero().tolist()
    [[0, 6], [0, 7], [1, 2]]
    >>> trie.contains([5, 7, 8]), trie.contains([5, 7])
    (True, False)
    >>> trie.extend([[5, 6, 1]]).sequences()
    [[5, 6, 1, 2], [5, 6, 2], [5, 7, 8, 2], [9, 2]]
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import torch

STATE_KEYS = ("edge_keys", "eos_id", "key_base")


class TrieError(ValueError):
    """Sequences that cannot form an ED trie (empty, negative ids, EOS before the end) or a bad state dict."""


class IdTrie:
    """Immutable prefix trie of EOS-terminated token sequences; build with `IdTrie.build`."""

    def __init__(self, edge_keys: torch.Tensor, eos_id: int, key_base: int):
        edge_keys = edge_keys.to(torch.int64)
        if edge_keys.dim() != 1:
            raise TrieError(f"edge_keys must be 1-D, got shape {tuple(edge_keys.shape)}")
        if edge_keys.numel() > 1 and not bool((edge_keys[1:] > edge_keys[:-1]).all()):
            raise TrieError("edge_keys must be strictly increasing")
        if edge_keys.numel() and int(edge_keys[0]) < 0:
            raise TrieError("edge_keys must be non-negative")
        if key_base <= eos_id or eos_id < 0:
            raise TrieError(f"need 0 <= eos_id < key_base, got eos_id={eos_id}, key_base={key_base}")
        self.edge_keys = edge_keys
        # Keys plus a sentinel above every key, so that searchsorted's index is always a valid position.
        self._search_keys = torch.cat([edge_keys, edge_keys.new_full((1,), torch.iinfo(torch.int64).max)])
        self.eos_id = int(eos_id)
        self.key_base = int(key_base)
        num_nodes = edge_keys.numel() + 1
        parents = edge_keys // key_base
        self.child_tokens = edge_keys % key_base
        # Edge i leads to node i + 1, so a parent must have a smaller id than its child.
        if edge_keys.numel() and not bool((parents <= torch.arange(edge_keys.numel(), device=edge_keys.device)).all()):
            raise TrieError("edge_keys do not describe a trie numbered level by level (a parent follows its child)")
        self.parent = torch.cat([parents.new_full((1,), -1), parents])  # [num_nodes], root's parent -1
        self.token = torch.cat([parents.new_full((1,), -1), self.child_tokens])  # token on the edge into node
        bounds = torch.arange(num_nodes + 1, device=edge_keys.device, dtype=torch.int64) * key_base
        self.offsets = torch.searchsorted(edge_keys, bounds)  # [num_nodes + 1], CSR ranges of children
        self.node_depth = _depths(self.parent)
        self.depth = int(self.node_depth.max()) if num_nodes > 1 else 0  # longest sequence, EOS included
        is_leaf_edge = self.child_tokens == self.eos_id
        has_children = self.offsets[2:] > self.offsets[1:-1]  # per edge: does its child node have children
        if bool((has_children & is_leaf_edge).any()):
            raise TrieError("a node reached by EOS has children: EOS must end every sequence")
        if bool((~has_children & ~is_leaf_edge).any()):
            raise TrieError("a path ends without EOS: every sequence must end with eos_id")
        self._len = int(is_leaf_edge.sum())

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]], eos_id: int) -> IdTrie:
        """Trie of `sequences`, each given EOS at its end when it lacks one (duplicates are stored once)."""
        flat, lengths = _flatten(sequences, eos_id)
        return cls._from_flat(flat, lengths, eos_id)

    @classmethod
    def _from_flat(cls, flat: torch.Tensor, lengths: torch.Tensor, eos_id: int) -> IdTrie:
        if flat.numel() == 0:
            return cls(torch.zeros(0, dtype=torch.int64), eos_id, eos_id + 1)
        key_base = max(int(flat.max()), eos_id) + 1
        num_seqs, width = lengths.numel(), int(lengths.max())
        padded = torch.full((num_seqs, width), -1, dtype=torch.int64)
        padded[torch.arange(width) < lengths[:, None]] = flat
        node = torch.zeros(num_seqs, dtype=torch.int64)
        next_id, levels = 1, []
        for j in range(width):
            active = lengths > j
            keys = node[active] * key_base + padded[active, j]
            # One level at a time: unique keys in sorted order become consecutive node ids, which keeps
            # the concatenated keys of all levels sorted (every parent of level j+1 outnumbers those of j).
            level_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
            levels.append(level_keys)
            node[active] = next_id + inverse
            next_id += level_keys.numel()
        return cls(torch.cat(levels), eos_id, key_base)

    def extend(self, new_sequences: Sequence[Sequence[int]]) -> IdTrie:
        """A new trie holding this trie's sequences and `new_sequences` (node ids are renumbered)."""
        flat, lengths = _flatten(new_sequences, self.eos_id)
        old_flat, old_lengths = self._flat_sequences()
        return IdTrie._from_flat(torch.cat([old_flat, flat]), torch.cat([old_lengths, lengths]), self.eos_id)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain CPU tensors (safetensors-compatible); everything else is derived on load."""
        return {
            "edge_keys": self.edge_keys.cpu().contiguous(),
            "eos_id": torch.tensor(self.eos_id, dtype=torch.int64),
            "key_base": torch.tensor(self.key_base, dtype=torch.int64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> IdTrie:
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise TrieError(f"trie state dict lacks {missing}; it has {sorted(state)}")
        return cls(state["edge_keys"], int(state["eos_id"]), int(state["key_base"]))

    def to(self, device: torch.device | str) -> IdTrie:
        """The same trie with its tensors on `device` (self when already there)."""
        device = torch.empty(0, device=device).device  # "cuda" -> "cuda:0", as tensors report it
        if self.device == device:
            return self
        moved = copy.copy(self)  # derived arrays move as they are: no rebuild, no re-validation
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, name, value.to(device))
        return moved

    @property
    def device(self) -> torch.device:
        return self.edge_keys.device

    @property
    def num_nodes(self) -> int:
        return self.edge_keys.numel() + 1

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        """Number of distinct sequences."""
        return self._len

    def __repr__(self) -> str:
        return (f"IdTrie({len(self)} sequences, {self.num_nodes} nodes, depth {self.depth}, "
                f"eos_id={self.eos_id}, device={self.device})")

    def walk(self, prefix_tokens: torch.Tensor) -> torch.Tensor:
        """Node reached by each row of `prefix_tokens` [N, L] from the root; -1 once a row leaves the trie."""
        return self.walk_path(prefix_tokens)[:, -1] if prefix_tokens.shape[1] else self._roots(prefix_tokens)

    def walk_path(self, prefix_tokens: torch.Tensor) -> torch.Tensor:
        """Nodes [N, L] reached after each column of `prefix_tokens` (-1 from where a row leaves the trie)."""
        if prefix_tokens.dim() != 2:
            raise ValueError(f"prefix_tokens must be [N, L], got shape {tuple(prefix_tokens.shape)}")
        tokens = prefix_tokens.to(device=self.device, dtype=torch.int64)
        off = (tokens < 0) | (tokens >= self.key_base)  # such a token leaves the trie, and so its row
        tokens = tokens.clamp(0, self.key_base - 1)
        node = self._roots(tokens)
        path = torch.empty_like(tokens)
        for j in range(tokens.shape[1]):
            # node -1 gives a negative key, which matches no edge; the sentinel key keeps idx in range.
            key = torch.add(tokens[:, j], node, alpha=self.key_base)
            idx = torch.searchsorted(self._search_keys, key)
            node = torch.where(self._search_keys[idx] == key, idx + 1, -1)
            path[:, j] = node
        if tokens.shape[1]:
            path.masked_fill_(off.cumsum(1, dtype=torch.int64) > 0, -1)
        return path

    def children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, edge, count): one (row, edge) pair per child of each row's node, and children per row.

        Rows with node -1 have none. The child token is ``child_tokens[edge]``, the child node ``edge + 1``.
        """
        nodes = nodes.to(device=self.device, dtype=torch.int64)
        valid = nodes >= 0
        safe = nodes.clamp(min=0)
        start = self.offsets[safe]
        count = torch.where(valid, self.offsets[safe + 1] - start, 0)
        total = int(count.sum())
        rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=self.device), count, output_size=total)
        first = torch.cumsum(count, 0) - count
        edges = start[rows] + torch.arange(total, device=self.device) - first[rows]
        return rows, edges, count

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Bool [N, vocab_size]: True at the tokens that extend each row's node (all False for -1 or a leaf)."""
        rows, edges, _ = self.children(nodes)
        tokens = self.child_tokens[edges]
        if self.key_base > vocab_size and tokens.numel() and int(tokens.max()) >= vocab_size:
            raise ValueError(f"the trie holds token {int(tokens.max())}, outside a vocabulary of {vocab_size}")
        mask = torch.zeros(nodes.numel(), vocab_size, dtype=torch.bool, device=self.device)
        mask[rows, tokens] = True
        return mask

    def contains(self, seq: Sequence[int]) -> bool:
        """Whether `seq` (EOS appended when missing) is one of the stored sequences."""
        seq = list(seq)
        if not seq or seq[-1] != self.eos_id:
            seq.append(self.eos_id)
        return bool(self.contains_batch([seq])[0])

    def contains_batch(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """Bool [N]: each sequence, taken as is (EOS included), is stored."""
        if not sequences:
            return torch.zeros(0, dtype=torch.bool)
        width = max(len(s) for s in sequences)
        padded = torch.full((len(sequences), max(width, 1)), -1, dtype=torch.int64)
        for i, s in enumerate(sequences):
            padded[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.int64)
        path = self.walk_path(padded).cpu()
        lengths = torch.tensor([len(s) for s in sequences])
        end = path[torch.arange(len(sequences)), (lengths - 1).clamp(min=0)]
        is_leaf = torch.zeros(len(sequences), dtype=torch.bool)
        ok = (end > 0) & (lengths > 0)
        is_leaf[ok] = self.token.cpu()[end[ok]] == self.eos_id
        return is_leaf

    def paths(self, nodes: torch.Tensor | Sequence[int]) -> list[list[int]]:
        """Token sequence from the root to each node ([] for the root or -1); EOS included for a leaf."""
        nodes = torch.as_tensor(nodes, dtype=torch.int64).cpu().flatten()
        parent, token, depth = self.parent.cpu(), self.token.cpu(), self.node_depth.cpu()
        valid = (nodes > 0) & (nodes < self.num_nodes)
        cur = torch.where(valid, nodes, 0)
        lengths = depth[cur]
        width = int(lengths.max()) if nodes.numel() else 0
        out = torch.full((nodes.numel(), max(width, 1)), -1, dtype=torch.int64)
        rows = torch.arange(nodes.numel())
        for _ in range(width):  # climb from every node at once, filling positions from the end
            live = cur > 0
            out[rows[live], depth[cur[live]] - 1] = token[cur[live]]
            cur = torch.where(live, parent[cur], cur)
        return [row[:n] for row, n in zip(out.tolist(), lengths.tolist(), strict=True)]

    def sequences(self) -> list[list[int]]:
        """Every stored sequence, EOS included, in lexicographic order of token ids."""
        flat, lengths = self._flat_sequences()
        out = [s.tolist() for s in torch.split(flat, lengths.tolist())]
        return sorted(out)

    def _flat_sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        parent, token, depth = self.parent.cpu(), self.token.cpu(), self.node_depth.cpu()
        leaves = torch.nonzero(token == self.eos_id).flatten()
        if leaves.numel() == 0:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
        lengths = depth[leaves]
        padded = torch.full((leaves.numel(), self.depth), -1, dtype=torch.int64)
        rows = torch.arange(leaves.numel())
        cur = leaves.clone()
        for _ in range(self.depth):  # climb from every leaf at once, filling positions from the end
            live = cur > 0
            padded[rows[live], depth[cur[live]] - 1] = token[cur[live]]
            cur = torch.where(live, parent[cur.clamp(min=0)], cur)
        return padded[padded >= 0], lengths

    def _roots(self, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(like.shape[0], dtype=torch.int64, device=self.device)


def _depths(parent: torch.Tensor) -> torch.Tensor:
    """Depth of every node (root 0) by repeated parent lookups: one pass per level, all nodes at once."""
    depth = torch.zeros_like(parent)
    if parent.numel() <= 1:
        return depth
    while True:
        new = depth.clone()
        new[1:] = depth[parent[1:]] + 1
        if torch.equal(new, depth):
            return depth
        depth = new


def _flatten(sequences: Sequence[Sequence[int]], eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All tokens of `sequences` (EOS appended where missing) in one tensor, and the length of each."""
    if eos_id is None or eos_id < 0:
        raise TrieError(f"eos_id must be a non-negative token id, got {eos_id}")
    seqs = [list(s) for s in sequences]
    for i, s in enumerate(seqs):
        if not s or s == [eos_id]:
            raise TrieError(f"sequence {i} is empty: an ED needs at least one token before EOS")
        if s[-1] != eos_id:
            s.append(eos_id)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    flat = torch.tensor(list(itertools.chain.from_iterable(seqs)), dtype=torch.int64)
    if flat.numel() and int(flat.min()) < 0:
        bad = next(i for i, s in enumerate(seqs) if min(s) < 0)
        raise TrieError(f"sequence {bad} has a negative token id: {seqs[bad][:20]}")
    ends = torch.cumsum(lengths, 0) - 1
    is_eos = flat == eos_id
    is_eos[ends] = False
    if bool(is_eos.any()):
        pos = int(torch.nonzero(is_eos)[0])
        bad = int(torch.searchsorted(ends, torch.tensor(pos)))
        raise TrieError(f"sequence {bad} has EOS ({eos_id}) before its end: {seqs[bad][:20]}")
    return flat, lengths

"""Which parts of torch.compile's cache keys differ between two processes.

With `TORCH_LOGS=+torch._inductor.codecache,+torch._functorch._aot_autograd.autograd_cache`,
inductor and AOTAutograd log each key they look up as a block: "... hash details for key K:"
then one "[hash] component: value" line per component (graph, each example input, configs, ...).
This reads such logs (endpoint logs, probe output), groups the blocks by process id, and compares
each process's keys with the next process's: the components whose hashes differ, each with
the values from the first character where they differ (a process that hits a cache logs fewer
keys than one that compiles: the j-th key of each kind is compared with the j-th).

    python -m benchmarks.probes.cache_keydiff LOG [LOG ...]

Note: a component's printed value is not all its hash covers. Two identical printed values with
different hashes differ in how they pickle: on the H200 (session 9) the forked restart's example
inputs printed the same as the plain start's but pickled `torch.channels_last` under another
module name, picked by import order (engine/compile_keys.py, docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field

HEAD = re.compile(r"^\S+ \S+ (\d+) \S+\] \[[^\]]*\] (.*)hash details for key (\S+):")
ITEM = re.compile(r"^\S+ \S+ (\d+) \S+\] \[[^\]]*\] \[([a-z0-9]{40,64})\] ([^:]+): ?(.*)$")


@dataclass
class KeyBlock:
    kind: str  # "Autograd graph cache" or "FX graph cache"
    key: str
    components: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (hash, value)


def read_blocks(paths: list[str]) -> OrderedDict[str, list[KeyBlock]]:
    """pid -> its key blocks, in the order they were logged."""
    blocks: OrderedDict[str, list[KeyBlock]] = OrderedDict()
    for path in paths:
        with open(path, errors="replace") as lines:
            for raw in lines:
                line = raw.rstrip("\n")
                head = HEAD.match(line)
                if head:
                    pid, kind, key = head.groups()
                    blocks.setdefault(pid, []).append(KeyBlock(kind.strip(), key[:12]))
                    continue
                item = ITEM.match(line)
                if item and blocks.get(item.group(1)):
                    pid, digest, name, value = item.groups()
                    blocks[pid][-1].components.setdefault(name, (digest, value))
    return blocks


def differing(a: KeyBlock, b: KeyBlock) -> list[str]:
    names = sorted(set(a.components) | set(b.components))
    return [n for n in names if a.components.get(n, ("",))[0] != b.components.get(n, ("",))[0]]


def first_difference(x: str, y: str) -> int:
    return next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))


def report(blocks: OrderedDict[str, list[KeyBlock]], shown: int = 12) -> list[str]:
    lines = [f"processes (key blocks): {', '.join(f'{pid} ({len(b)})' for pid, b in blocks.items())}"]
    pids = list(blocks)
    for first, second in zip(pids, pids[1:], strict=False):
        # a process that hits a cache logs fewer keys than one that compiles: pair the blocks of
        # each kind in order (the j-th AOTAutograd key with the j-th, likewise FX graphs)
        kinds = dict.fromkeys(block.kind for block in blocks[first] + blocks[second])
        pairs = [
            (kind, a, b)
            for kind in kinds
            for a, b in zip(
                [x for x in blocks[first] if x.kind == kind],
                [x for x in blocks[second] if x.kind == kind],
                strict=False,
            )
        ]
        for kind, a, b in pairs:
            names = differing(a, b)
            total = len(set(a.components) | set(b.components))
            lines.append(f"{kind}: {first} {a.key} vs {second} {b.key}: {len(names)} of {total} differ")
            for name in names[:shown]:
                va, vb = a.components.get(name, ("", "-"))[1], b.components.get(name, ("", "-"))[1]
                at = first_difference(va, vb)
                start = max(0, at - 60)
                same = " (printed values identical)" if va == vb else ""
                lines.append(f"  {name}, from char {at}{same}")
                lines.append(f"    {first}: ...{va[start : start + 240]}")
                lines.append(f"    {second}: ...{vb[start : start + 240]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+")
    p.add_argument("--shown", type=int, default=12, help="differing components shown per block")
    args = p.parse_args(argv)
    print("\n".join(report(read_blocks(args.logs), args.shown)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Atomic read-modify-write instructions per request, from a callgrind profile.

Run the profile harness under callgrind with per-instruction costs, then give this
script the output file and the number of requests it made (warm-up included):

    valgrind --tool=callgrind --dump-instr=yes --dump-line=no \
        --callgrind-out-file=cg.out target/release/deps/profile-* closefirst 6400 64
    python3 benches/tools/count_atomics.py cg.out 6600

It disassembles every object the profile names (objdump), takes each instruction with
a `lock` prefix or an `xchg` with a memory operand (the x86-64 atomic read-modify-write
instructions), and adds up how often callgrind saw each execute, per function. Prints
the total per request and the 40 functions with the most.
"""

import collections
import re
import subprocess
import sys


def main():
    path, requests = sys.argv[1], float(sys.argv[2])
    names = {}

    def name(kind, text):
        # callgrind compresses names: "(12) name" the first time, "(12)" after.
        match = re.match(r"\((\d+)\)(?: (.*))?", text)
        if not match:
            return text
        key = (kind, match.group(1))
        if match.group(2):
            names[key] = match.group(2)
        return names.get(key, "?")

    costs = collections.defaultdict(lambda: collections.defaultdict(int))
    function_at = {}
    obj = function = None
    position = 0
    skip_call_cost = False
    with open(path) as lines:
        for line in lines:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("ob="):
                obj = name("ob", line[3:])
                continue
            if line.startswith("fn="):
                function = name("fn", line[3:])
                continue
            if line.startswith("cob="):
                name("ob", line[4:])
                continue
            if line.startswith("cfn="):
                name("fn", line[4:])
                continue
            if line.startswith(("cfi=", "cfl=", "fl=", "fi=", "fe=")):
                continue
            if line.startswith("calls="):
                # The next cost line is the call's inclusive cost, not this function's.
                skip_call_cost = True
                continue
            if line[0] not in "0123456789+-*":
                continue
            parts = line.split()
            where = parts[0]
            if where.startswith("0x"):
                position = int(where, 16)
            elif where[0] == "+":
                position += int(where[1:])
            elif where[0] == "-":
                position -= int(where[1:])
            elif where != "*":
                position = int(where)
            if skip_call_cost:
                skip_call_cost = False
                continue
            if len(parts) > 1:
                costs[obj][position] += int(parts[1])
                function_at[(obj, position)] = function

    total = 0
    by_function = collections.Counter()
    for obj, executed in costs.items():
        if not obj or not obj.startswith("/"):
            continue
        listing = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True
        ).stdout
        atomic = set()
        for row in listing.splitlines():
            match = re.match(r"\s*([0-9a-f]+):\s+(.*)", row)
            if not match:
                continue
            instruction = match.group(2)
            if instruction.startswith("lock") or (
                instruction.startswith("xchg") and "(" in instruction
            ):
                atomic.add(int(match.group(1), 16))
        for address, count in executed.items():
            if address in atomic:
                total += count
                by_function[(obj.split("/")[-1], function_at[(obj, address)])] += count

    print("atomic read-modify-write instructions per request: %.2f" % (total / requests))
    for (obj, function), count in by_function.most_common(40):
        print("%8.3f  %s %s" % (count / requests, obj, function[:150]))


if __name__ == "__main__":
    main()

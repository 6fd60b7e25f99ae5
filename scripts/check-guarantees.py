#!/usr/bin/env python3
"""Checks that every test GUARANTEES.md cites exists.

Reads the promise table's last column ("tests") and the section "How the
promises are tested", takes every name in backticks that looks like a
Rust function name (lower case, digits and underscores, at least one
underscore), and looks for `fn NAME` (also `async fn NAME`) in the Rust
files of the repository (tests/, core/, src/, cli/, adapter-*/, journal-*/,
examples/, benches/). A name written as a suffix (`_on_tokio` after
`random_..._on_manual_clock`) stands for the previous name with its last
`_on_...` replaced. A few words in that column are not test functions
and are checked otherwise (below).

Usage: python3 scripts/check-guarantees.py [GUARANTEES.md]
Exit status 1, naming each missing test, if one is not found.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCHED = ["tests", "core", "src", "examples", "benches", "cli"]
SEARCHED_PREFIXES = ["adapter-", "journal-"]
SKIPPED_DIRS = {"target", ".git", "node_modules"}

# Words in the tests column that are not test functions, each with the
# file that must exist, and a text it must hold, for the citation to hold.
NOT_FUNCTIONS = {
    # "the `compile_fail` doctest on `Transaction`"
    "compile_fail": ("core/src/engine/transaction.rs", "```compile_fail"),
    # "the `journaled` firmware" (a binary of examples/firmware)
    "journaled": ("examples/firmware/src/bin/journaled.rs", "fn main"),
}

NAME = re.compile(r"^_?[a-z][a-z0-9_]*$")


def cited_names(text):
    names = []
    in_how = False
    for line in text.splitlines():
        if line.startswith("## "):
            in_how = line.strip() == "## How the promises are tested"
            continue
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if len(cells) < 3 or cells[-1].strip() == "tests":
                continue
            source = cells[-1]
        elif in_how:
            source = line
        else:
            continue
        previous = None
        for token in re.findall(r"`([^`]+)`", source):
            if token.startswith("_") and previous:
                head = "_" + token[1:].split("_")[0] + "_"
                cut = previous.rfind(head)
                if cut < 0:
                    names.append(token)
                    continue
                token = previous[:cut] + token
            if not NAME.match(token) or "_" not in token.strip("_"):
                if token in NOT_FUNCTIONS:
                    names.append(token)
                continue
            names.append(token)
            previous = token
    return names


def rust_sources():
    for entry in sorted(os.listdir(ROOT)):
        if entry in SEARCHED or any(entry.startswith(p) for p in SEARCHED_PREFIXES):
            top = os.path.join(ROOT, entry)
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
                for filename in filenames:
                    if filename.endswith(".rs"):
                        yield os.path.join(dirpath, filename)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "GUARANTEES.md")
    with open(path, encoding="utf-8") as f:
        names = cited_names(f.read())
    if not names:
        print(f"{path}: no test names found (is the table still there?)")
        return 1
    defined = set()
    for source in rust_sources():
        with open(source, encoding="utf-8", errors="replace") as f:
            defined.update(re.findall(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)", f.read()))
    missing = []
    for name in dict.fromkeys(names):
        if name in NOT_FUNCTIONS:
            file, text = NOT_FUNCTIONS[name]
            try:
                with open(os.path.join(ROOT, file), encoding="utf-8") as f:
                    found = text in f.read()
            except OSError:
                found = False
            if not found:
                missing.append(f"{name} (expected `{text}` in {file})")
        elif name not in defined:
            missing.append(name)
    if missing:
        for name in missing:
            print(f"{os.path.basename(path)} cites a test that does not exist: {name}")
        return 1
    print(f"{os.path.basename(path)}: all {len(dict.fromkeys(names))} cited tests exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Every cargo-mutants mutant of one core file, against the facade's tests.

cargo-mutants (27.1) runs only the mutated package's tests for a file in
`core/`: its `--test-package` and the `test_package` config key were both
ignored, and the engine's tests live in the facade. This script takes
cargo-mutants' list and does the rest itself:

    cargo mutants --workspace -f core/src/engine/recovery.rs --list --json > /tmp/m.json
    python3 scripts/mutants-sweep.py /tmp/m.json core/src/engine/recovery.rs out.txt durability journal

It applies each mutant to the file in place (run it in a worktree of its
own: `git worktree add ../wt-mut HEAD`), builds and runs
`cargo test --features FEATURES --test <each name>`, writes one line per
mutant to the output (`caught`, `MISSED`, `unviable`, `timeout`), and
restores the file. Incremental builds in `target-sweep/`: 1 to 12 s per
mutant with two test files, about a minute with eight. Run the MISSED ones
again with more test files (write their names to a file and pass
`--only FILE`) before calling one harmless.
"""
import json
import os
import subprocess
import sys
import time

FEATURES = "tokio,smol,embassy,log,tracing,serde,metrics"


def main():
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        at = args.index("--only")
        only = {line.strip() for line in open(args[at + 1]) if line.strip()}
        del args[at:at + 2]
    if len(args) < 4:
        sys.exit(__doc__)
    listing, path, output, tests = args[0], args[1], args[2], args[3:]
    mutants = [m for m in json.load(open(listing)) if only is None or m["name"] in only]
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.abspath("target-sweep"), CARGO_INCREMENTAL="1")
    command = ["cargo", "test", "-q", "--features", FEATURES]
    for test in tests:
        command += ["--test", test]
    original = open(path).read()
    lines = original.split("\n")

    def offset(line, column):
        return sum(len(text) + 1 for text in lines[: line - 1]) + column - 1

    with open(output, "a") as out:
        try:
            for mutant in mutants:
                start, end = mutant["span"]["start"], mutant["span"]["end"]
                a, b = offset(start["line"], start["column"]), offset(end["line"], end["column"])
                with open(path, "w") as f:
                    f.write(original[:a] + mutant["replacement"] + original[b:])
                began = time.time()
                try:
                    built = subprocess.run(command + ["--no-run"], env=env, capture_output=True, timeout=900)
                    if built.returncode != 0:
                        verdict = "unviable"
                    else:
                        ran = subprocess.run(command, env=env, capture_output=True, timeout=300)
                        verdict = "caught" if ran.returncode != 0 else "MISSED"
                except subprocess.TimeoutExpired:
                    verdict = "timeout"
                out.write(f"{verdict}\t{mutant['name']}\t{int(time.time() - began)}s\n")
                out.flush()
        finally:
            with open(path, "w") as f:
                f.write(original)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Follows code that moved to another file: every patch in scripts/mutations/
whose hunks no longer apply (`git apply -C1 --check`, as mutation-check.sh
applies them) is tried against each file of core/src, and rewritten to name
the one file it applies to. Its `# tests:` line stays as it is (the tests did
not move). Then each patch is applied and `cargo check`ed: a patch that
applies but no longer compiles (a path it names moved) is reported, to edit
by hand.

Usage: python3 scripts/retarget-mutations.py     (from a clean core/src)
"""

import glob
import os
import re
import subprocess
import sys
import tempfile


def applies(patch_text):
    with tempfile.NamedTemporaryFile("w", suffix=".patch", delete=False) as f:
        f.write(patch_text)
    try:
        return subprocess.run(["git", "apply", "-C1", "--check", f.name], capture_output=True).returncode == 0
    finally:
        os.unlink(f.name)


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if subprocess.run(["git", "diff", "--quiet", "--", "core/src"]).returncode != 0:
        print("core/src has uncommitted changes: commit or stash them first")
        return 2
    files = sorted(glob.glob("core/src/**/*.rs", recursive=True))
    status = 0
    for path in sorted(glob.glob("scripts/mutations/*.patch")):
        text = open(path).read()
        if not applies(text):
            targets = re.findall(r"^\+\+\+ b/(\S+)", text, re.M)
            if len(targets) != 1:
                print(f"{path}: spans {len(targets)} files; retarget it by hand")
                status = 1
                continue
            old = targets[0]
            fits = [f for f in files if applies(text.replace(old, f))]
            if len(fits) != 1:
                print(f"{path}: applies to {len(fits)} files ({', '.join(fits) or 'none'}); edit it by hand")
                status = 1
                continue
            text = text.replace(old, fits[0])
            open(path, "w").write(text)
            print(f"{path}: {old} -> {fits[0]}")
        subprocess.run(["git", "apply", "-C1", path], check=True, capture_output=True)
        try:
            check = subprocess.run(
                ["cargo", "check", "-q", "-p", "transaction-manager-core", "--all-features"], capture_output=True, text=True
            )
            if check.returncode != 0:
                print(f"{path}: applies but does not compile; edit it by hand:\n{check.stderr[:2000]}")
                status = 1
        finally:
            subprocess.run(["git", "checkout", "-q", "--", "core/src"], check=True)
    if status == 0:
        print("every mutation patch applies and compiles")
    return status


if __name__ == "__main__":
    sys.exit(main())

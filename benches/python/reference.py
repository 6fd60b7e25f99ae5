"""The Python package this library grew from (`async-transaction-manager`
on PyPI), timed the way `benches/` times the Rust library: a 3-step
transaction of no-op steps committed, and the failure path (3 steps, the
third fails, 2 rollbacks), against the same awaits written by hand in the
same process. Prints wall and CPU time per transaction (medians of 7
samples) and the ratios.

    python3 -m venv /tmp/pyref && /tmp/pyref/bin/pip install async-transaction-manager==0.1.2
    /tmp/pyref/bin/python benches/python/reference.py

Not run by CI (it needs the package from PyPI); the numbers are in
BENCHMARKS.md with their date.
"""

import asyncio
import statistics
import sys
import time

from transaction_manager.transaction_manager import TransactionManager

N = 20_000 if "--smoke" not in sys.argv else 200
SAMPLES = 7


async def step(value):
    return value


async def undo(*_args):
    return None


async def fail():
    raise RuntimeError("refused")


async def library_commit(i):
    async with TransactionManager(f"tx-{i}", "bench") as tx:
        a = await tx.add_step("a", step, rollback_func=undo, args=(1,))
        b = await tx.add_step("b", step, rollback_func=undo, args=(a,))
        await tx.add_step("c", step, rollback_func=undo, args=(b,))


async def library_failure(i):
    try:
        async with TransactionManager(f"tx-{i}", "bench") as tx:
            a = await tx.add_step("a", step, rollback_func=undo, args=(1,))
            await tx.add_step("b", step, rollback_func=undo, args=(a,))
            await tx.add_step("c", fail, rollback_func=undo)
    except RuntimeError:
        pass


async def by_hand_commit(_i):
    a = await step(1)
    b = await step(a)
    await step(b)


async def by_hand_failure(_i):
    a = await step(1)
    b = await step(a)
    try:
        await fail()
    except RuntimeError:
        await undo(b)
        await undo(a)


async def sample(run):
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(N):
        await run(i)
    return (time.perf_counter() - wall) / N * 1e6, (time.process_time() - cpu) / N * 1e6


async def main():
    figures = {}
    pairs = [("commit", library_commit, by_hand_commit), ("failure", library_failure, by_hand_failure)]
    for _ in range(SAMPLES):  # interleaved: a neighbour's load falls on both
        for name, library, by_hand in pairs:
            figures.setdefault((name, "library"), []).append(await sample(library))
            figures.setdefault((name, "by hand"), []).append(await sample(by_hand))
    print(f"# async-transaction-manager (Python {sys.version.split()[0]}), {N} transactions a sample, "
          f"{SAMPLES} samples, medians; cpu = process time")
    for name, _, _ in pairs:
        lib = [statistics.median(x) for x in zip(*figures[(name, "library")])]
        hand = [statistics.median(x) for x in zip(*figures[(name, "by hand")])]
        print(f"{name:8} library {lib[0]:8.2f} µs/tx (cpu {lib[1]:8.2f})   by hand {hand[0]:6.2f} µs/tx "
              f"(cpu {hand[1]:6.2f})   overhead {lib[1] - hand[1]:+8.2f} µs cpu, {lib[1] / hand[1]:.1f}x")


asyncio.run(main())

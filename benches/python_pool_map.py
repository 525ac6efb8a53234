# The Python peers of benches/pool.rs, with the same workloads and the same names:
# - pool_map_trivial: multiprocessing.Pool(2) (fork) .map(inc, range(N)), N = 10,000, with
#   the default chunksize (N / (4 x 2) = 1,250, as shmkit's) and chunksize=1; the pool is
#   made once, outside the timing; ns per item = wall time of one whole map / N.
# - pool_apply_rtt: one pool.apply(inc, (1,)) round trip.
# - process_start_join: start and join a Process whose target does nothing, with the fork
#   and spawn start methods (exit code checked).
# Each figure: the min and the median over several repetitions (time.perf_counter).
# Run: python3 benches/python_pool_map.py
import multiprocessing as mp
import statistics
import sys
import time

N = 10_000


def inc(x):
    return x + 1


def noop(_):
    pass


def measure(fn, reps):
    """min and median seconds of `fn()` over `reps` runs, after one untimed warm-up run."""
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts)


def report(name, per, unit, reps, t):
    lo, med = t
    print(f"{name:40s} min {lo / per * 1e9:10.0f} ns  median {med / per * 1e9:10.0f} ns  per {unit} ({reps} reps)")


def start_join(ctx):
    p = ctx.Process(target=noop, args=(0,))
    p.start()
    p.join()
    assert p.exitcode == 0


if __name__ == "__main__":
    print(f"Python {sys.version.split()[0]}")
    want = list(range(1, N + 1))
    with mp.get_context("fork").Pool(2) as pool:
        assert pool.map(inc, range(N)) == want
        assert pool.map(inc, range(N), chunksize=1) == want
        reps = 20
        report("pool_map_trivial/python_pool", N, "item", reps, measure(lambda: pool.map(inc, range(N)), reps))
        reps = 5
        report("pool_map_trivial/python_pool_chunk1", N, "item", reps,
               measure(lambda: pool.map(inc, range(N), chunksize=1), reps))
        reps, calls = 5, 2000

        def applies():
            for _ in range(calls):
                pool.apply(inc, (1,))

        assert pool.apply(inc, (1,)) == 2
        report("pool_apply_rtt/python_pool", calls, "apply", reps, measure(applies, reps))
    reps = 20
    report("pool_map_trivial/python_sequential", N, "item", reps, measure(lambda: list(map(inc, range(N))), reps))
    for method, count, reps in (("fork", 100, 5), ("spawn", 10, 5)):
        ctx = mp.get_context(method)

        def starts(ctx=ctx, count=count):
            for _ in range(count):
                start_join(ctx)

        report(f"process_start_join/python_{method}", count, "process", reps, measure(starts, reps))

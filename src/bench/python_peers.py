# Python's multiprocessing as a peer of `shmkit bench` (src/bench/python.rs runs it as
# `python3 -c <this file> WORKLOAD N [ARG]` and reads the one number it prints).
# Each workload mirrors the shmkit one of the same group; the fork start method unless said
# otherwise; the clock runs after one warm-up round, as in the Rust workloads. Blocking calls
# take no timeout (a timeout costs Python an extra poll per call); the Rust side kills the
# whole process group if a run hangs.
import multiprocessing as mp
import os
import sys
import time

FORK = mp.get_context("fork")


def inc(x):
    return x + 1


def queue_sender(q, n):
    for i in range(1, n + 2):
        q.put(i)


def queue_tput(n):
    """M msg/s: n small ints through a multiprocessing.Queue, child to parent."""
    q = FORK.Queue()
    p = FORK.Process(target=queue_sender, args=(q, n), daemon=True)
    p.start()
    if q.get() != 1:
        raise SystemExit("queue: out of order")
    t = time.perf_counter()
    for i in range(2, n + 2):
        if q.get() != i:
            raise SystemExit("queue: out of order")
    d = time.perf_counter() - t
    p.join()
    return n / d / 1e6


def echo(conn, n):
    for _ in range(n + 1):
        conn.send(conn.recv())


def pipe_rtt(n):
    """ns per round trip: a small int sent over a duplex Pipe and echoed back."""
    a, b = FORK.Pipe()
    p = FORK.Process(target=echo, args=(b, n), daemon=True)
    p.start()
    a.send(0)
    a.recv()
    t = time.perf_counter()
    for i in range(n):
        a.send(i)
        if a.recv() != i:
            raise SystemExit("pipe: wrong echo")
    d = time.perf_counter() - t
    p.join()
    return d / n * 1e9


def lock_uncontended(n):
    """ns per acquire + release of a multiprocessing.Lock nobody else touches."""
    lock = FORK.Lock()
    acquire, release = lock.acquire, lock.release
    t = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter() - t) / n * 1e9


def incr(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def incr_child(v, ready, go, done, n):
    ready.set()
    go.wait()
    incr(v, n)
    done.set()


def value_incr(n):
    """ns per increment: two processes add n/2 each to one Value('q') under its lock; the
    clock runs from the start signal until both are done (as value_incr_2proc in Rust)."""
    v = FORK.Value("q", 0)
    ready, go, done = FORK.Event(), FORK.Event(), FORK.Event()
    half = n // 2
    p = FORK.Process(target=incr_child, args=(v, ready, go, done, n - half), daemon=True)
    p.start()
    ready.wait()
    t = time.perf_counter()
    go.set()
    incr(v, half)
    done.wait()
    d = time.perf_counter() - t
    p.join()
    if v.value != n:
        raise SystemExit(f"value: {v.value} != {n}")
    return d / n * 1e9


def start_join(n, method):
    """us to start and join a Process whose target does nothing."""
    ctx = mp.get_context(method)
    t = time.perf_counter()
    for _ in range(n):
        # A function of a module, not of this script: spawned children import it by name
        # (this script, run with -c, cannot be imported).
        p = ctx.Process(target=os.getpid)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"exit code {p.exitcode}")
    return (time.perf_counter() - t) / n * 1e6


def pool_map(n, chunksize):
    """ns per item of one Pool(2).map(inc, range(n)); chunksize 0 is Python's default."""
    with FORK.Pool(2) as pool:
        pool.map(inc, range(100))
        t = time.perf_counter()
        out = pool.map(inc, range(n)) if chunksize == 0 else pool.map(inc, range(n), chunksize)
        d = time.perf_counter() - t
    if out[-1] != n:
        raise SystemExit("pool: wrong result")
    return d / n * 1e9


def pool_apply(n):
    """us per pool.apply(inc, (1,)) round trip on a Pool(2)."""
    with FORK.Pool(2) as pool:
        pool.apply(inc, (1,))
        t = time.perf_counter()
        for _ in range(n):
            if pool.apply(inc, (1,)) != 2:
                raise SystemExit("apply: wrong result")
        d = time.perf_counter() - t
    return d / n * 1e6


def manager_dict(n):
    """us per d["k"] = i on a Manager's dict: one request and its reply over the manager's
    Unix socket to its server process."""
    with FORK.Manager() as m:
        d = m.dict()
        d["k"] = 0
        t = time.perf_counter()
        for i in range(1, n + 1):
            d["k"] = i
        dt = time.perf_counter() - t
        if d["k"] != n:
            raise SystemExit("manager: wrong value")
    return dt / n * 1e6


if __name__ == "__main__":
    work, n = sys.argv[1], int(sys.argv[2])
    arg = sys.argv[3] if len(sys.argv) > 3 else None
    if work == "version":
        # Also checks that the pieces the workloads need work here (POSIX semaphores).
        FORK.Lock()
        FORK.Queue()
        print(sys.version.split()[0])
        sys.exit(0)
    fns = {
        "queue_tput": lambda: queue_tput(n),
        "pipe_rtt": lambda: pipe_rtt(n),
        "lock_uncontended": lambda: lock_uncontended(n),
        "value_incr": lambda: value_incr(n),
        "start_join": lambda: start_join(n, arg),
        "pool_map": lambda: pool_map(n, int(arg)),
        "pool_apply": lambda: pool_apply(n),
        "manager_dict": lambda: manager_dict(n),
    }
    print(repr(float(fns[work]())))

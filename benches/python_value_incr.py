# The Python peer of `value_incr_2proc`: two forked processes increment one
# multiprocessing.Value under get_lock(); prints wall time per increment (either process).
# Run: python3 benches/python_value_incr.py
import multiprocessing as mp, time
N=100000
def work(v):
    for _ in range(N):
        with v.get_lock():
            v.value += 1
if __name__=="__main__":
    mp.set_start_method("fork")
    v=mp.Value('q',0)
    ps=[mp.Process(target=work,args=(v,)) for _ in range(2)]
    t=time.perf_counter()
    for p in ps: p.start()
    for p in ps: p.join()
    dt=time.perf_counter()-t
    assert v.value==2*N
    print(f"{dt/(2*N)*1e9:.0f} ns per increment (2 processes, {2*N} increments)")

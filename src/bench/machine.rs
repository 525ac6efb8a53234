//! Facts about the machine a benchmark ran on, and how busy other work kept it.
//!
//! ```
//! use std::time::Duration;
//! use shmkit::bench::machine::{CpuClock, Machine};
//!
//! let m = Machine::probe();
//! assert!(m.cpus >= 1);
//! let before = CpuClock::now()?;
//! std::thread::sleep(Duration::from_millis(50));
//! // Too short a window to tell.
//! assert_eq!(CpuClock::now()?.others_since(&before), None);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::time::{Duration, Instant};

/// What the machine is.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cpus: usize,
    /// CPUs online (`_SC_NPROCESSORS_ONLN`).
    pub cpus_online: usize,
    /// The CPU's model name from `/proc/cpuinfo` (`?` if absent).
    pub cpu_model: String,
    /// `uname -sr`, e.g. `Linux 6.18.44`.
    pub kernel: String,
    /// Total memory in GiB (0 if unknown).
    pub mem_gib: f64,
    /// The 1-, 5- and 15-minute load averages (NaN if unknown).
    pub load: [f64; 3],
}

impl Machine {
    /// Reads the facts from `/proc` and `uname`; what cannot be read is `?`, 0 or NaN.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("?")
            .to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut load = [f64::NAN; 3];
        if let Ok(s) = std::fs::read_to_string("/proc/loadavg") {
            for (slot, v) in load.iter_mut().zip(s.split_whitespace()) {
                *slot = v.parse().unwrap_or(f64::NAN);
            }
        }
        // SAFETY: sysconf has no memory effects.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        Machine {
            cpus: super::available_cpus(),
            cpus_online: usize::try_from(online).unwrap_or(0),
            cpu_model,
            kernel: kernel(),
            mem_gib: mem_kib as f64 / (1u64 << 20) as f64,
            load,
        }
    }

    /// One line: `2 CPUs (AMD EPYC ...), 23.4 GiB, Linux 6.18.44, load 0.52 0.61 0.70`.
    pub fn summary(&self) -> String {
        let cpus = if self.cpus == self.cpus_online {
            format!("{} CPUs", self.cpus)
        } else {
            format!("{} of {} CPUs", self.cpus, self.cpus_online)
        };
        format!(
            "{cpus} ({}), {:.1} GiB, {}, load {:.2} {:.2} {:.2}",
            self.cpu_model, self.mem_gib, self.kernel, self.load[0], self.load[1], self.load[2]
        )
    }
}

/// `uname -sr`.
fn kernel() -> String {
    // SAFETY: `utsname` is plain data that uname fills in; its fields are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "?".to_owned();
        }
        let field = |f: &[libc::c_char]| {
            let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        format!("{} {}", field(&u.sysname), field(&u.release))
    }
}

/// The CPU time so far of the CPUs this process may run on (from `/proc/stat`) beside this
/// process's own (its threads and its reaped children), to tell how much other work ran on
/// those CPUs meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct CpuClock {
    at: Instant,
    /// Busy seconds of the allowed CPUs (everything but idle, iowait and steal).
    busy: f64,
    /// Seconds the hypervisor ran someone else while an allowed CPU wanted to run.
    steal: f64,
    /// How many CPUs the figures cover.
    cpus: usize,
    /// This process's user + system seconds, reaped children included.
    own: f64,
}

/// How busy other work kept the allowed CPUs between two [`CpuClock`] readings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Others {
    /// The share of the allowed CPUs' time that other processes used (0 to 1): their busy
    /// time minus this process's own (and its reaped children's), over wall time × CPUs.
    pub busy: f64,
    /// The share of the allowed CPUs' time stolen by the hypervisor (0 to 1).
    pub steal: f64,
    /// The wall time between the readings.
    pub wall: Duration,
}

/// Below this window a share is mostly clock-tick rounding (a tick is 10 ms or less).
pub const MIN_WINDOW: Duration = Duration::from_secs(2);

impl CpuClock {
    /// Reads the clocks.
    ///
    /// # Errors
    /// `/proc/stat` unreadable or without a line for an allowed CPU, or `getrusage` failed.
    pub fn now() -> io::Result<CpuClock> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let allowed = allowed_cpus();
        let (mut busy, mut steal, mut cpus) = (0u64, 0u64, 0usize);
        for line in stat.lines() {
            let mut fields = line.split_whitespace();
            let Some(cpu) =
                fields.next().and_then(|f| f.strip_prefix("cpu")).and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if allowed.as_ref().is_some_and(|a| !a.contains(&cpu)) {
                continue;
            }
            let ticks: Vec<u64> = fields.map(|v| v.parse().unwrap_or(0)).collect();
            let get = |i: usize| ticks.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            busy += get(0) + get(1) + get(2) + get(5) + get(6);
            steal += get(7);
            cpus += 1;
        }
        if cpus == 0 {
            return Err(io::Error::other("/proc/stat has no line for the CPUs this process may use"));
        }
        // SAFETY: sysconf has no memory effects.
        let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            hz if hz > 0 => hz as f64,
            _ => 100.0,
        };
        let own = rusage(libc::RUSAGE_SELF)? + rusage(libc::RUSAGE_CHILDREN)?;
        Ok(CpuClock { at: Instant::now(), busy: busy as f64 / hz, steal: steal as f64 / hz, cpus, own })
    }

    /// How busy other work kept this process's CPUs since `earlier`; `None` for a window
    /// shorter than [`MIN_WINDOW`], too short to tell.
    pub fn others_since(&self, earlier: &CpuClock) -> Option<Others> {
        let wall = self.at.saturating_duration_since(earlier.at);
        if wall < MIN_WINDOW {
            return None;
        }
        let capacity = wall.as_secs_f64() * self.cpus as f64;
        let share = |v: f64| (v / capacity).clamp(0.0, 1.0);
        Some(Others {
            busy: share((self.busy - earlier.busy) - (self.own - earlier.own)),
            steal: share(self.steal - earlier.steal),
            wall,
        })
    }
}

/// The CPUs this process may run on, from its affinity mask (`None` if unknown: all).
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data that sched_getaffinity fills in.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid size and pointer for the calling thread's mask.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return None;
    }
    // SAFETY: CPU_ISSET reads the set filled in above; the index is below its capacity.
    Some((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// User + system seconds of `who`.
fn rusage(who: libc::c_int) -> io::Result<f64> {
    // SAFETY: `ru` is plain data that getrusage fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a live rusage.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Above this share of the machine used by other work, figures are not to be trusted.
pub const BUSY_SHARE: f64 = 0.10;

/// Why the machine looks too busy for trustworthy figures, if it does: other work above
/// [`BUSY_SHARE`], hypervisor steal above it, or a 1-minute load average above half the
/// machine's CPUs (when `others` is not known).
pub fn busy_warning(m: &Machine, others: Option<&Others>) -> Option<String> {
    match others {
        Some(o) if o.busy > BUSY_SHARE => Some(format!(
            "other processes used {:.0}% of the CPUs over {:.1} s: figures are skewed; run again on a quiet machine",
            o.busy * 100.0,
            o.wall.as_secs_f64()
        )),
        Some(o) if o.steal > BUSY_SHARE => Some(format!(
            "the hypervisor stole {:.0}% of the CPU time over {:.1} s: figures are skewed",
            o.steal * 100.0,
            o.wall.as_secs_f64()
        )),
        Some(_) => None,
        // The load average counts runnable tasks of the whole machine: compare it with all
        // of the machine's CPUs.
        None if m.load[0] > m.cpus_online.max(1) as f64 / 2.0 => Some(format!(
            "load average {:.2} on {} CPUs: the machine is busy, figures will be skewed",
            m.load[0],
            m.cpus_online.max(1)
        )),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_this_machine() {
        let m = Machine::probe();
        assert!(m.cpus >= 1 && m.cpus_online >= m.cpus, "{m:?}");
        assert!(m.kernel.starts_with("Linux "), "{m:?}");
        assert!(m.mem_gib > 0.0, "{m:?}");
        assert!(m.load[0] >= 0.0, "{m:?}");
        assert!(m.summary().contains(&m.kernel));
    }

    #[test]
    fn own_work_is_not_counted_as_others() {
        let before = CpuClock::now().unwrap();
        // Burn 150 ms of this thread's CPU (however long that takes on a busy machine): it
        // must not show up as other work.
        let start = rusage(libc::RUSAGE_THREAD).unwrap();
        let mut x = 0u64;
        while rusage(libc::RUSAGE_THREAD).unwrap() - start < 0.15 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        // Too short a window so far to say anything.
        assert_eq!(CpuClock::now().unwrap().others_since(&before), None);
        std::thread::sleep(MIN_WINDOW.saturating_sub(before.at.elapsed()));
        let after = CpuClock::now().unwrap();
        // Both clocks saw the burn (jiffies are 10 ms or less: allow two of them).
        assert!(after.own - before.own >= 0.13, "own {before:?} -> {after:?}");
        assert!(after.busy - before.busy >= 0.13, "busy {before:?} -> {after:?}");
        // And what is left for others is the rest: within bounds, below everything seen.
        let o = after.others_since(&before).expect("a long enough window");
        assert!((0.0..=1.0).contains(&o.busy) && (0.0..=1.0).contains(&o.steal), "{o:?}");
        let all = (after.busy - before.busy) / (o.wall.as_secs_f64() * after.cpus as f64);
        assert!(o.busy < all, "{o:?} vs all {all}");
        assert!(o.wall >= MIN_WINDOW);
    }

    #[test]
    fn warnings() {
        let mut m = Machine::probe();
        (m.cpus, m.cpus_online) = (1, 2);
        m.load = [3.0, 0.0, 0.0];
        // The load is the machine's: compared with all its CPUs, not the ones we may use.
        assert!(busy_warning(&m, None).unwrap().contains("load average 3.00 on 2 CPUs"));
        m.load = [0.9, 0.0, 0.0];
        assert_eq!(busy_warning(&m, None), None);
        let quiet = Others { busy: 0.01, steal: 0.0, wall: Duration::from_secs(1) };
        assert_eq!(busy_warning(&m, Some(&quiet)), None);
        let busy = Others { busy: 0.5, ..quiet };
        assert!(busy_warning(&m, Some(&busy)).unwrap().contains("50%"));
        let stolen = Others { steal: 0.3, ..quiet };
        assert!(busy_warning(&m, Some(&stolen)).unwrap().contains("stole 30%"));
        m.load = [0.1, 0.0, 0.0];
        assert_eq!(busy_warning(&m, None), None);
    }
}

//! CPU time and memory of this process and of the calling thread, from getrusage(2).

use std::time::Duration;

/// CPU time (user + system) and peak resident set size (MiB) of this process so far.
pub fn process_usage() -> (Duration, f64) {
    match rusage(libc::RUSAGE_SELF) {
        // ru_maxrss is in KiB on Linux.
        Some(usage) => (cpu_time(&usage), usage.ru_maxrss as f64 / 1024.0),
        None => (Duration::ZERO, 0.0),
    }
}

/// CPU time (user + system) of the calling thread so far.
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD).map_or(Duration::ZERO, |usage| cpu_time(&usage))
}

fn rusage(who: libc::c_int) -> Option<libc::rusage> {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(who, &mut usage) };
    (rc == 0).then_some(usage)
}

fn cpu_time(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

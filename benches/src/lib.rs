//! The measuring kit shared by the bench binaries: a counting global
//! allocator, a sampler of wall time and this thread's CPU time (warm-up,
//! many samples, median of each), the table the figures are printed in,
//! and `/proc/self/status` readings.
//!
//! No timing is ever asserted: checks (`Report::check`) are about results
//! and allocation counts only, so a slow machine never fails a smoke run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A global allocator that counts allocations while counting is on.
///
/// Install it with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
/// Counting is off by default, so timing runs pay one relaxed load per
/// allocation and nothing more.
pub struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters are
// plain atomics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations (a `realloc` counts as one) and bytes requested.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Allocs {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub count: u64,
    /// Bytes those calls asked for.
    pub bytes: u64,
}

/// Starts counting allocations (on every thread: count with nothing else
/// running).
pub fn start_counting() {
    ALLOCS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
}

/// Stops counting and returns what was counted since [`start_counting`].
pub fn stop_counting() -> Allocs {
    COUNTING.store(false, Ordering::SeqCst);
    Allocs { count: ALLOCS.load(Ordering::Relaxed), bytes: BYTES.load(Ordering::Relaxed) }
}

/// How hard to measure: full runs, or the CI smoke run (tiny counts, the
/// same code paths and checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Warm-up, calibration to ~`SAMPLE` per sample, `SAMPLES` samples.
    Full,
    /// A few iterations, a few samples: checks results, not speed.
    Smoke,
}

impl Mode {
    /// `--smoke` on the command line or `TM_BENCH_SMOKE=1` in the
    /// environment selects the smoke run.
    pub fn from_env() -> Self {
        let smoke_arg = std::env::args().any(|a| a == "--smoke");
        let smoke_env = std::env::var("TM_BENCH_SMOKE").is_ok_and(|v| v != "0" && !v.is_empty());
        if smoke_arg || smoke_env { Mode::Smoke } else { Mode::Full }
    }

    /// Whether this is the smoke run.
    pub fn is_smoke(self) -> bool {
        self == Mode::Smoke
    }
}

/// This thread's CPU time (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`): on a
/// shared machine it leaves out the time the thread waited for a core,
/// which wall time counts.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant Linux always has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall time and this thread's CPU time, started together.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    wall: Instant,
    cpu: Duration,
}

impl Stopwatch {
    /// Reads both clocks.
    pub fn start() -> Self {
        Stopwatch { cpu: thread_cpu_time(), wall: Instant::now() }
    }

    /// Wall and CPU time since [`Stopwatch::start`].
    pub fn elapsed(&self) -> Elapsed {
        let wall = self.wall.elapsed();
        Elapsed { wall, cpu: thread_cpu_time().saturating_sub(self.cpu) }
    }
}

/// What a [`Stopwatch`] measured.
#[derive(Clone, Copy, Debug)]
pub struct Elapsed {
    /// Wall-clock time.
    pub wall: Duration,
    /// CPU time of the measuring thread.
    pub cpu: Duration,
}

/// Median time per iteration over many samples.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Median wall time over the samples, in nanoseconds per iteration.
    pub median_ns: f64,
    /// The fastest sample's wall time, in nanoseconds per iteration.
    pub min_ns: f64,
    /// Median thread CPU time over the samples, in nanoseconds per
    /// iteration (each clock's median on its own).
    pub cpu_median_ns: f64,
    /// Iterations per sample.
    pub iters: u64,
    /// Samples taken.
    pub samples: usize,
}

const SAMPLE: Duration = Duration::from_millis(20);
const SAMPLES: usize = 31;
const WARM_UP: Duration = Duration::from_millis(150);

/// Times `run`, which runs `iters` iterations of the work and returns how
/// long they took, by a [`Stopwatch`] (so it can time inside an executor
/// and leave the executor's start-up out). Warm-up, then calibration to
/// about 20 ms of wall time per sample, then 31 samples; the medians of
/// wall and of CPU time are the figures.
pub fn measure(mode: Mode, mut run: impl FnMut(u64) -> Elapsed) -> Timing {
    let (iters, samples) = match mode {
        Mode::Smoke => (black_box(3), 3),
        Mode::Full => {
            let start = Instant::now();
            let mut iters = 1u64;
            // Warm-up doubles as calibration.
            while start.elapsed() < WARM_UP {
                let took = run(iters).wall;
                if took < SAMPLE / 4 {
                    iters = iters.saturating_mul(2);
                }
            }
            let took = run(iters).wall.max(Duration::from_nanos(1));
            let scaled = (iters as f64 * SAMPLE.as_secs_f64() / took.as_secs_f64()).ceil();
            (scaled.max(1.0) as u64, SAMPLES)
        }
    };
    let per_iter = |d: Duration| d.as_nanos() as f64 / iters as f64;
    let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..samples)
        .map(|_| {
            let took = run(iters);
            (per_iter(took.wall), per_iter(took.cpu))
        })
        .unzip();
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    Timing { median_ns: wall[wall.len() / 2], min_ns: wall[0], cpu_median_ns: cpu[cpu.len() / 2], iters, samples }
}

/// One line of `/proc/self/status`, in KiB (`VmHWM`, `VmRSS`).
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The machine, for the report's header: cores and CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores, {model}")
}

/// The printed report: sections of rows, each a figure with the library's
/// number, its baseline(s), and their difference and ratio; plus the
/// checks, whose failures make the process exit non-zero.
#[derive(Default)]
pub struct Report {
    failures: Vec<String>,
}

impl Report {
    /// Starts a section.
    pub fn section(&self, title: &str) {
        println!("\n## {title}\n");
    }

    /// Prints a line of text as it is.
    pub fn note(&self, text: &str) {
        println!("{text}");
    }

    /// A timing row: library against one baseline, in ns.
    pub fn time_row(&self, figure: &str, library: Timing, baseline_name: &str, baseline: Timing) {
        self.time_row_per(figure, library, baseline_name, baseline, 1);
    }

    /// A timing row, also divided by `per` (steps) for the per-step figures.
    /// Each figure is wall time with this thread's CPU time after it.
    pub fn time_row_per(&self, figure: &str, library: Timing, baseline_name: &str, baseline: Timing, per: u32) {
        let (l, b) = (library.median_ns, baseline.median_ns);
        let (lc, bc) = (library.cpu_median_ns, baseline.cpu_median_ns);
        let mut line = format!(
            "{figure:<44} library {l:>9.1} ns (cpu {lc:>9.1}) | {baseline_name} {b:>9.1} ns (cpu {bc:>9.1}) | diff {:>+8.1} ns (cpu {:>+8.1}) | ratio {:>5.2}x (cpu {:>5.2}x)",
            l - b,
            lc - bc,
            l / b.max(f64::MIN_POSITIVE),
            lc / bc.max(f64::MIN_POSITIVE),
        );
        if per > 1 {
            let _ = write!(
                line,
                " | per step: diff {:>+7.1} ns (cpu {:>+7.1})",
                (l - b) / f64::from(per),
                (lc - bc) / f64::from(per)
            );
        }
        println!("{line}");
    }

    /// A plain value row.
    pub fn value_row(&self, figure: &str, value: &str) {
        println!("{figure:<44} {value}");
    }

    /// Records a failed check (a wrong result, an allocation where none may
    /// be); never used for timings.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            let what = what.into();
            println!("CHECK FAILED: {what}");
            self.failures.push(what);
        }
    }

    /// Prints the verdict and exits non-zero if a check failed.
    pub fn finish(self) {
        if self.failures.is_empty() {
            println!("\nall checks passed");
        } else {
            println!("\n{} check(s) FAILED:", self.failures.len());
            for f in &self.failures {
                println!("  - {f}");
            }
            std::process::exit(1);
        }
    }
}

/// Whether this build's core has `alloc`: it keeps a 200-byte error text
/// whole (without `alloc` it cuts it short).
pub fn core_has_alloc() -> bool {
    use transaction_manager_core::{ManualClock, NoRollback, TransactionManager};
    struct Long;
    impl std::fmt::Display for Long {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&"x".repeat(200))
        }
    }
    let clock = ManualClock::new();
    let m = TransactionManager::new(&clock);
    let err = clock
        .block_on(
            m.transaction("probe")
                .fixed::<NoRollback, 1>()
                .run(async |tx| tx.step("long").run(|| async { Err::<(), _>(Long) }).await),
        )
        .expect_err("the probe step fails");
    err.summary().steps()[0].error().map_or(0, str::len) >= 200
}

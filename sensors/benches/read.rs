//! Benchmark: one full poll of every sensor over the large fixture tree (64 DIMMs, 32
//! temperatures, 4 InfiniBand ports with hw_counters, 8 NICs, 16 PCIe devices, a
//! rasdaemon database): wall and CPU time per poll, allocations per poll.
//!
//! `cargo bench -p lifeboat-sensors --bench read`; `LIFEBOAT_BENCH_QUICK=1` for a short
//! smoke run. CPU time is this thread's run time from `/proc/thread-self/schedstat`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lifeboat_sensors::{Root, Source, all_sensors, read_all};

/// Counts allocations and allocated bytes, then defers to the system allocator.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are this allocator's; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract (non-zero size layout).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `alloc`/`realloc` above (i.e. by `System`) with
        // this `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with `layout`; the caller guarantees
        // `new_size` is valid for it.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's CPU time so far.
fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn main() {
    let quick = std::env::var_os("LIFEBOAT_BENCH_QUICK").is_some();
    let polls: u32 = if quick { 20 } else { 1000 };
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sensors/large");
    assert!(root_dir.is_dir(), "{} missing", root_dir.display());
    let root = Root::new(&root_dir);
    let mut sensors = all_sensors();

    // Warm up: page cache, the rasdaemon database opened and its rows counted once.
    let first = read_all(&root, &mut sensors);
    let readings: usize = first.iter().map(|s| s.readings.len()).sum();
    let errors: usize = first.iter().map(|s| s.errors.len()).sum();
    assert_eq!(errors, 0, "the large tree reads without errors: {first:?}");
    for _ in 0..4 {
        read_all(&root, &mut sensors);
    }

    let mut per_source = vec![Duration::ZERO; Source::ALL.len()];
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    for _ in 0..polls {
        let scans = read_all(&root, &mut sensors);
        for (i, s) in scans.iter().enumerate() {
            per_source[i] += s.elapsed;
        }
        std::hint::black_box(scans);
    }
    let (wall, cpu) = (wall0.elapsed(), cpu_time() - cpu0);
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    let bytes = BYTES.load(Ordering::Relaxed) - b0;

    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(polls);
    println!(
        "sensors/read: large tree, {readings} readings per poll, {polls} polls{}",
        if quick { " (quick)" } else { "" }
    );
    println!("  wall time per poll:   {:9.1} µs", per(wall));
    println!("  CPU time per poll:    {:9.1} µs", per(cpu));
    println!(
        "  allocations per poll: {:9.0}",
        allocs as f64 / f64::from(polls)
    );
    println!(
        "  bytes alloc per poll: {:9.0}",
        bytes as f64 / f64::from(polls)
    );
    for (i, src) in Source::ALL.iter().enumerate() {
        println!("    {:<11} {:9.1} µs", src.as_str(), per(per_source[i]));
    }
}

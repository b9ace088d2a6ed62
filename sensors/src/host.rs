//! Host facts a rule may weigh: load averages and memory, from `proc/loadavg` and
//! `proc/meminfo` under the root.
//!
//! These are read from procfs text rather than through a crate such as sysinfo because
//! such crates read the running host's `/proc` and cannot be pointed at another root,
//! and the fixture trees must work. Formats per `Documentation/filesystems/proc.rst`.
//!
//! Readings (gauges, no labels): `load1`, `load5`, `load15`, `memory_total_bytes`
//! (`MemTotal`), `memory_available_bytes` (`MemAvailable`).

use crate::SensorError;
use crate::reading::{Reading, Source};
use crate::sysfs::Collector;
use crate::{Root, Scan, Sensor, timed};

/// Reads load and memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostSensor;

impl Sensor for HostSensor {
    fn source(&self) -> Source {
        Source::Host
    }

    fn read(&mut self, root: &Root) -> Scan {
        timed(Source::Host, |c| collect(root, c))
    }
}

fn collect(root: &Root, c: &mut Collector) -> bool {
    let mut present = false;
    let path = root.join("proc/loadavg");
    if let Some(text) = c.text(&path) {
        present = true;
        let loads: Vec<Option<f64>> = text
            .split_whitespace()
            .take(3)
            .map(|w| w.parse().ok())
            .collect();
        match loads.as_slice() {
            [Some(a), Some(b), Some(d)] => {
                for (name, v) in [("load1", a), ("load5", b), ("load15", d)] {
                    c.push(Reading::gauge(Source::Host, name, *v));
                }
            }
            _ => c
                .errors
                .push(SensorError::parse(&path, &text, "three load averages")),
        }
    }
    let path = root.join("proc/meminfo");
    if let Some(text) = c.text(&path) {
        present = true;
        for (key, name) in [
            ("MemTotal", "memory_total_bytes"),
            ("MemAvailable", "memory_available_bytes"),
        ] {
            let Some(line) = text.lines().find(|l| l.split(':').next() == Some(key)) else {
                continue;
            };
            match meminfo_bytes(line) {
                Some(v) => c.push(Reading::gauge(Source::Host, name, v)),
                None => c
                    .errors
                    .push(SensorError::parse(&path, line, "`Key: N kB`")),
            }
        }
    }
    present
}

/// "MemTotal:       16318720 kB" -> bytes.
fn meminfo_bytes(line: &str) -> Option<f64> {
    let (_, rest) = line.split_once(':')?;
    let mut words = rest.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(n as f64 * 1024.0),
        None => Some(n as f64),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_lines() {
        for (line, want) in [
            ("MemTotal:       16318720 kB", Some(16_710_369_280.0)),
            ("HugePages_Total:       0", Some(0.0)),
            ("MemTotal: lots", None),
            ("MemTotal: 5 MB", None),
        ] {
            assert_eq!(meminfo_bytes(line), want, "{line}");
        }
    }
}

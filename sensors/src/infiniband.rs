//! InfiniBand ports: error and traffic counters, link state and rate from
//! `sys/class/infiniband/DEV/ports/N/`.
//!
//! Per `Documentation/ABI/stable/sysfs-class-infiniband`: `counters/*` are the PMA port
//! counters (`symbol_error`, `port_rcv_errors`, `link_error_recovery`, `link_downed`,
//! `local_link_integrity_errors`, `excessive_buffer_overrun_errors`,
//! `port_rcv_remote_physical_errors`, `port_xmit_discards`, `VL15_dropped`,
//! `port_xmit_data`, ...), `hw_counters/*` driver-specific counters, `state`
//! ("4: ACTIVE"), `phys_state` ("5: LinkUp"), `rate` ("100 Gb/sec (4X EDR)").
//!
//! What real ports show and this reader survives:
//! - a counter reading `N/A (no PMA)` (no Performance Management Agent on the port):
//!   no data for that counter, not an error;
//! - a read failing with EINVAL (some drivers, ports in some states): a counted
//!   [`SensorError`](crate::SensorError) for that file, the other counters still read;
//! - 32-bit counters stuck at 4294967295 (PMA counters saturate instead of wrapping):
//!   reported as they are, values are u64 read exactly into f64.
//!
//! Readings (labels `device` = "mlx5_0", `port` = "1"): every `counters/` file as a
//! counter named like the file; every `hw_counters/` file except `lifespan` (a setting)
//! as a counter named `hw_<file>`; gauges `port_state` and `port_phys_state` (the
//! number before the colon, with label `state` = the text after it) and
//! `port_rate_bytes_per_second` (Gb/sec × 10⁹ / 8). `port_xmit_data` and `port_rcv_data`
//! count 4-octet words, as the kernel gives them.

use std::path::Path;

use crate::SensorError;
use crate::reading::{Reading, Source};
use crate::sysfs::{Collector, parse_u64};
use crate::{Root, Scan, Sensor, timed};

/// Where the InfiniBand class directory is, under the root.
pub const CLASS_DIR: &str = "sys/class/infiniband";

/// Reads every InfiniBand port.
#[derive(Debug, Default, Clone, Copy)]
pub struct InfinibandSensor;

impl Sensor for InfinibandSensor {
    fn source(&self) -> Source {
        Source::Infiniband
    }

    fn read(&mut self, root: &Root) -> Scan {
        timed(Source::Infiniband, |c| collect(&root.join(CLASS_DIR), c))
    }
}

fn collect(dir: &Path, c: &mut Collector) -> bool {
    let Some(devices) = c.list(dir) else {
        return false;
    };
    let present = !devices.is_empty();
    for (device, dpath) in devices {
        let Some(ports) = c.list(&dpath.join("ports")) else {
            continue;
        };
        for (port, ppath) in ports {
            read_port(&device, &port, &ppath, c);
        }
    }
    present
}

fn read_port(device: &str, port: &str, dir: &Path, c: &mut Collector) {
    let labelled = |r: Reading| r.label("device", device).label("port", port);
    for (file, name) in [("state", "port_state"), ("phys_state", "port_phys_state")] {
        let path = dir.join(file);
        let Some(text) = c.text(&path) else {
            continue;
        };
        match parse_state(&text) {
            Some((n, state)) => c.push(
                labelled(Reading::gauge(Source::Infiniband, name, n as f64)).label("state", state),
            ),
            None => c
                .errors
                .push(SensorError::parse(&path, &text, "`N: STATE`")),
        }
    }
    let rate_path = dir.join("rate");
    if let Some(text) = c.text(&rate_path) {
        match parse_rate(&text) {
            Some(bps) => c.push(labelled(Reading::gauge(
                Source::Infiniband,
                "port_rate_bytes_per_second",
                bps,
            ))),
            None => c
                .errors
                .push(SensorError::parse(&rate_path, &text, "`N Gb/sec ...`")),
        }
    }
    for (sub, prefix) in [("counters", ""), ("hw_counters", "hw_")] {
        let Some(files) = c.list(&dir.join(sub)) else {
            continue;
        };
        for (file, path) in files {
            if sub == "hw_counters" && file == "lifespan" {
                continue;
            }
            let Some(text) = c.text(&path) else {
                continue;
            };
            if text.starts_with("N/A") {
                continue;
            }
            match parse_u64(&text) {
                Some(v) => c.push(labelled(Reading::counter(
                    Source::Infiniband,
                    format!("{prefix}{file}"),
                    v as f64,
                ))),
                None => c
                    .errors
                    .push(SensorError::parse(&path, &text, "an unsigned integer")),
            }
        }
    }
}

/// "4: ACTIVE" -> (4, "ACTIVE").
fn parse_state(text: &str) -> Option<(u32, &str)> {
    let (n, s) = text.split_once(':')?;
    Some((n.trim().parse().ok()?, s.trim()))
}

/// "100 Gb/sec (4X EDR)" -> 12.5e9 bytes per second.
fn parse_rate(text: &str) -> Option<f64> {
    let mut words = text.split_whitespace();
    let n: f64 = words.next()?.parse().ok()?;
    let unit = words.next()?;
    let scale = match unit {
        "Gb/sec" => 1e9,
        "Mb/sec" => 1e6,
        _ => return None,
    };
    Some(n * scale / 8.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_rates() {
        assert_eq!(parse_state("4: ACTIVE"), Some((4, "ACTIVE")));
        assert_eq!(parse_state("5: LinkUp"), Some((5, "LinkUp")));
        assert_eq!(parse_state("ACTIVE"), None);
        assert_eq!(parse_rate("100 Gb/sec (4X EDR)"), Some(12.5e9));
        assert_eq!(parse_rate("2.5 Gb/sec (1X SDR)"), Some(312_500_000.0));
        assert_eq!(parse_rate("N/A"), None);
    }
}

//! Network interfaces: error statistics from `sys/class/net/IF/statistics/`.
//!
//! Per `Documentation/ABI/testing/sysfs-class-net-statistics` (and
//! `sysfs-class-net` for `carrier_changes`). Only the error and drop statistics are
//! read ([`STATISTICS`]); byte, packet, multicast and compression counts are not, they
//! say nothing about failing hardware. `lo` is skipped.
//!
//! Readings (counters, label `device` = "eth0"): one per file of [`STATISTICS`] named
//! like the file, and `carrier_changes` (link flaps).

use std::path::Path;

use crate::reading::{Reading, Source};
use crate::sysfs::Collector;
use crate::{Root, Scan, Sensor, timed};

/// Where the net class directory is, under the root.
pub const CLASS_DIR: &str = "sys/class/net";

/// The statistics files read, each reported as a counter of the same name.
pub const STATISTICS: &[&str] = &[
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
    "collisions",
    "rx_length_errors",
    "rx_over_errors",
    "rx_crc_errors",
    "rx_frame_errors",
    "rx_fifo_errors",
    "rx_missed_errors",
    "tx_aborted_errors",
    "tx_carrier_errors",
    "tx_fifo_errors",
    "tx_heartbeat_errors",
    "tx_window_errors",
    "rx_nohandler",
];

/// Reads every network interface but `lo`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetdevSensor;

impl Sensor for NetdevSensor {
    fn source(&self) -> Source {
        Source::Netdev
    }

    fn read(&mut self, root: &Root) -> Scan {
        timed(Source::Netdev, |c| collect(&root.join(CLASS_DIR), c))
    }
}

fn collect(dir: &Path, c: &mut Collector) -> bool {
    let Some(entries) = c.list(dir) else {
        return false;
    };
    let mut present = false;
    for (device, path) in entries {
        if device == "lo" {
            continue;
        }
        let stats = path.join("statistics");
        if !stats.is_dir() {
            continue;
        }
        present = true;
        for &file in STATISTICS {
            if let Some(v) = c.u64(&stats.join(file)) {
                c.push(
                    Reading::counter(Source::Netdev, file, v as f64)
                        .label("device", device.as_str()),
                );
            }
        }
        if let Some(v) = c.u64(&path.join("carrier_changes")) {
            c.push(
                Reading::counter(Source::Netdev, "carrier_changes", v as f64)
                    .label("device", device.as_str()),
            );
        }
    }
    present
}

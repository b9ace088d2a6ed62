//! PCIe Advanced Error Reporting counters from `sys/bus/pci/devices/*/aer_*`.
//!
//! Per `Documentation/ABI/testing/sysfs-bus-pci-devices-aer_stats`: `aer_dev_correctable`,
//! `aer_dev_fatal` and `aer_dev_nonfatal` hold one `NAME COUNT` line per error bit and a
//! `TOTAL_ERR_COR` / `TOTAL_ERR_FATAL` / `TOTAL_ERR_NONFATAL` line; root ports also have
//! `aer_rootport_total_err_cor|fatal|nonfatal` with one number each. The NAMEs differ
//! between kernels: the first kernels with these files (4.19) print long names with
//! spaces ("Receiver Error", "Bad TLP"), later ones short ones ("RxErr", "BadTLP") and
//! add bits; the name is everything before the last word of the line, as printed.
//!
//! Readings (counters, label `device` = "0000:3b:00.0"): `aer_correctable`,
//! `aer_nonfatal`, `aer_fatal` per error with label `error` (the NAME);
//! `aer_correctable_errors`, `aer_nonfatal_errors`, `aer_fatal_errors` from the TOTAL
//! lines; `aer_rootport_correctable_errors`, `aer_rootport_nonfatal_errors`,
//! `aer_rootport_fatal_errors`. The source is present when any device has AER files.

use std::path::Path;

use crate::SensorError;
use crate::reading::{Reading, Source};
use crate::sysfs::{Collector, parse_u64};
use crate::{Root, Scan, Sensor, timed};

/// Where the PCI devices are, under the root.
pub const DEVICES_DIR: &str = "sys/bus/pci/devices";

/// (file, per-error name, total line, total name)
const DEV_FILES: [(&str, &str, &str, &str); 3] = [
    (
        "aer_dev_correctable",
        "aer_correctable",
        "TOTAL_ERR_COR",
        "aer_correctable_errors",
    ),
    (
        "aer_dev_nonfatal",
        "aer_nonfatal",
        "TOTAL_ERR_NONFATAL",
        "aer_nonfatal_errors",
    ),
    (
        "aer_dev_fatal",
        "aer_fatal",
        "TOTAL_ERR_FATAL",
        "aer_fatal_errors",
    ),
];

const ROOTPORT_FILES: [(&str, &str); 3] = [
    (
        "aer_rootport_total_err_cor",
        "aer_rootport_correctable_errors",
    ),
    (
        "aer_rootport_total_err_nonfatal",
        "aer_rootport_nonfatal_errors",
    ),
    ("aer_rootport_total_err_fatal", "aer_rootport_fatal_errors"),
];

/// Reads the AER counters of every PCI device that has them.
#[derive(Debug, Default, Clone, Copy)]
pub struct PcieAerSensor;

impl Sensor for PcieAerSensor {
    fn source(&self) -> Source {
        Source::PcieAer
    }

    fn read(&mut self, root: &Root) -> Scan {
        timed(Source::PcieAer, |c| collect(&root.join(DEVICES_DIR), c))
    }
}

fn collect(dir: &Path, c: &mut Collector) -> bool {
    let Some(devices) = c.list(dir) else {
        return false;
    };
    let mut present = false;
    for (device, path) in devices {
        for (file, per_error, total_line, total_name) in DEV_FILES {
            let fpath = path.join(file);
            let Some(text) = c.text(&fpath) else {
                continue;
            };
            present = true;
            let (lines, bad) = parse_stats(&text);
            for (name, count) in lines {
                let r = if name == total_line {
                    Reading::counter(Source::PcieAer, total_name, count as f64)
                } else {
                    Reading::counter(Source::PcieAer, per_error, count as f64).label("error", name)
                };
                c.push(r.label("device", device.as_str()));
            }
            if let Some(line) = bad {
                c.errors
                    .push(SensorError::parse(&fpath, line, "`NAME COUNT` lines"));
            }
        }
        for (file, name) in ROOTPORT_FILES {
            if let Some(v) = c.u64(&path.join(file)) {
                present = true;
                c.push(
                    Reading::counter(Source::PcieAer, name, v as f64)
                        .label("device", device.as_str()),
                );
            }
        }
    }
    present
}

/// The `NAME COUNT` lines of an `aer_dev_*` file, and the first line that is not one.
fn parse_stats(text: &str) -> (Vec<(&str, u64)>, Option<&str>) {
    let mut out = Vec::new();
    let mut bad = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parsed = line
            .rsplit_once(char::is_whitespace)
            .and_then(|(name, n)| Some((name.trim(), parse_u64(n)?)))
            .filter(|(name, _)| !name.is_empty());
        match parsed {
            Some(p) => out.push(p),
            None => {
                bad.get_or_insert(line);
            }
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, want: &[(&str, u64)], want_bad: Option<&str>) {
        let (got, bad) = parse_stats(text);
        assert_eq!(got, want, "{text:?}");
        assert_eq!(bad, want_bad, "{text:?}");
    }

    #[test]
    fn name_count_lines_of_old_and_new_kernels() {
        check(
            "Receiver Error 2\nBad TLP 0\nRELAY_NUM Rollover 1\nTOTAL_ERR_COR 3\n",
            &[
                ("Receiver Error", 2),
                ("Bad TLP", 0),
                ("RELAY_NUM Rollover", 1),
                ("TOTAL_ERR_COR", 3),
            ],
            None,
        );
        check(
            "RxErr 7\nBadTLP 1\nTOTAL_ERR_COR 8\n",
            &[("RxErr", 7), ("BadTLP", 1), ("TOTAL_ERR_COR", 8)],
            None,
        );
        check("RxErr x\n12\nTLP 1\n", &[("TLP", 1)], Some("RxErr x"));
        check("", &[], None);
    }
}

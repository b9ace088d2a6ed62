//! hwmon chips: temperatures, fans, voltages and power from `sys/class/hwmon/hwmonN`.
//!
//! Attributes and units follow the kernel's `Documentation/hwmon/sysfs-interface.rst`:
//! `tempN_input`/`_max`/`_min`/`_crit`/`_lcrit`/`_emergency` in millidegrees Celsius,
//! `tempN_alarm`/`_crit_alarm`/`_max_alarm`/`_min_alarm` 0 or 1, `tempN_label` text; `fanN_input`/`_min` in
//! RPM, `fanN_alarm`; `inN_input`/`_min`/`_max` in millivolts, `inN_alarm`;
//! `powerN_input`/`_average` in microwatts. Older drivers keep the attributes in
//! `hwmonN/device/` instead of `hwmonN/`; both are read.
//!
//! `hwmonN` numbers change from boot to boot, so chips are named by their device path
//! instead: `chip` is the path of the device the hwmon directory belongs to, relative to
//! `sys/devices` (`platform/coretemp.0`, `pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0`,
//! `virtual/thermal/thermal_zone0`).
//!
//! Readings (labels `chip`, `chip_name` from `name`, `sensor` = "temp1", `label` when
//! `tempN_label` exists; all gauges): `temp_celsius`, `temp_max_celsius`,
//! `temp_min_celsius`, `temp_crit_celsius`, `temp_lcrit_celsius`,
//! `temp_emergency_celsius`, `temp_alarm`, `temp_crit_alarm`, `temp_max_alarm`,
//! `temp_min_alarm`, `fan_rpm`, `fan_min_rpm`, `fan_alarm`, `in_volts`, `in_min_volts`,
//! `in_max_volts`, `in_alarm`, `power_watts`, `power_average_watts`. Other attributes
//! (`curr`, `energy`, `humidity`, hysteresis values) are not read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::reading::{Reading, Source};
use crate::sysfs::{Collector, index_of, natural_cmp};
use crate::{Root, Scan, Sensor, timed};

/// Where the hwmon class directory is, under the root.
pub const CLASS_DIR: &str = "sys/class/hwmon";

/// Reads every hwmon chip.
#[derive(Debug, Default, Clone, Copy)]
pub struct HwmonSensor;

impl Sensor for HwmonSensor {
    fn source(&self) -> Source {
        Source::Hwmon
    }

    fn read(&mut self, root: &Root) -> Scan {
        timed(Source::Hwmon, |c| collect(root, c))
    }
}

/// (attribute suffix, reading name, divisor to base units)
pub(crate) type Attr = (&'static str, &'static str, f64);

const TEMP: &[Attr] = &[
    ("input", "temp_celsius", 1000.0),
    ("max", "temp_max_celsius", 1000.0),
    ("min", "temp_min_celsius", 1000.0),
    ("crit", "temp_crit_celsius", 1000.0),
    ("emergency", "temp_emergency_celsius", 1000.0),
    ("lcrit", "temp_lcrit_celsius", 1000.0),
    ("alarm", "temp_alarm", 1.0),
    ("crit_alarm", "temp_crit_alarm", 1.0),
    ("max_alarm", "temp_max_alarm", 1.0),
    ("min_alarm", "temp_min_alarm", 1.0),
];
const FAN: &[Attr] = &[
    ("input", "fan_rpm", 1.0),
    ("min", "fan_min_rpm", 1.0),
    ("alarm", "fan_alarm", 1.0),
];
const IN: &[Attr] = &[
    ("input", "in_volts", 1000.0),
    ("min", "in_min_volts", 1000.0),
    ("max", "in_max_volts", 1000.0),
    ("alarm", "in_alarm", 1.0),
];
const POWER: &[Attr] = &[
    ("input", "power_watts", 1e6),
    ("average", "power_average_watts", 1e6),
];

/// The attributes read of a sensor kind (`temp`, `fan`, `in`, `power`).
pub(crate) fn attrs_of(kind: &str) -> Option<&'static [Attr]> {
    Some(match kind {
        "temp" => TEMP,
        "fan" => FAN,
        "in" => IN,
        "power" => POWER,
        _ => return None,
    })
}

fn collect(root: &Root, c: &mut Collector) -> bool {
    let class = root.join(CLASS_DIR);
    let Some(entries) = c.list(&class) else {
        return false;
    };
    let devices = std::fs::canonicalize(root.join("sys/devices")).ok();
    let mut present = false;
    for (name, path) in entries {
        if index_of(&name, "hwmon").is_none() {
            continue;
        }
        present = true;
        let chip = chip_id(&name, &path, devices.as_deref());
        chip_readings(&chip, &path, c);
    }
    present
}

/// The stable name of a chip: its device path relative to `sys/devices`, without the
/// trailing `hwmon/hwmonN`.
pub(crate) fn chip_id(name: &str, path: &Path, devices: Option<&Path>) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let rel = devices
        .and_then(|d| real.strip_prefix(d).ok())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    let mut parts: Vec<&str> = rel.iter().filter_map(|s| s.to_str()).collect();
    if parts.last().is_some_and(|p| index_of(p, "hwmon").is_some()) {
        parts.pop();
        if parts.last() == Some(&"hwmon") {
            parts.pop();
        }
    }
    if parts.is_empty() {
        name.to_string()
    } else {
        parts.join("/")
    }
}

fn chip_readings(chip: &str, dir: &Path, c: &mut Collector) {
    // Old drivers: attributes live in device/.
    let attr_dir = if !dir.join("name").exists() && dir.join("device/name").exists() {
        dir.join("device")
    } else {
        dir.to_path_buf()
    };
    let chip_name = c.text(&attr_dir.join("name")).filter(|s| !s.is_empty());
    let Some(entries) = c.list(&attr_dir) else {
        return;
    };
    // sensor ("temp1") -> its attribute files, in natural order of sensors.
    let mut sensors: BTreeMap<SensorKey, Vec<(String, PathBuf)>> = BTreeMap::new();
    for (file, path) in entries {
        let Some((sensor, attr)) = file.split_once('_') else {
            continue;
        };
        let kind = sensor.trim_end_matches(|ch: char| ch.is_ascii_digit());
        if kind.len() == sensor.len() || attrs_of(kind).is_none() {
            continue;
        }
        sensors
            .entry(SensorKey(sensor.to_string()))
            .or_default()
            .push((attr.to_string(), path));
    }
    for (SensorKey(sensor), files) in sensors {
        let kind = sensor.trim_end_matches(|ch: char| ch.is_ascii_digit());
        let Some(attrs) = attrs_of(kind) else {
            continue;
        };
        let label = files
            .iter()
            .find(|(a, _)| a == "label")
            .and_then(|(_, p)| c.text(p))
            .filter(|s| !s.is_empty());
        for &(suffix, name, divisor) in attrs {
            let Some((_, path)) = files.iter().find(|(a, _)| a == suffix) else {
                continue;
            };
            let Some(raw) = c.i64(path) else {
                continue;
            };
            let mut r = Reading::gauge(Source::Hwmon, name, raw as f64 / divisor)
                .label("chip", chip)
                .label("sensor", sensor.as_str());
            if let Some(n) = &chip_name {
                r = r.label("chip_name", n.as_str());
            }
            if let Some(l) = &label {
                r = r.label("label", l.as_str());
            }
            c.push(r);
        }
    }
}

/// Orders sensors naturally (`temp2` before `temp10`).
#[derive(Debug, PartialEq, Eq)]
struct SensorKey(String);

impl PartialOrd for SensorKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SensorKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        natural_cmp(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chip_names_come_from_the_device_path() {
        let dev = Path::new("/fx/sys/devices");
        for (real, want) in [
            (
                "/fx/sys/devices/platform/coretemp.0/hwmon/hwmon3",
                "platform/coretemp.0",
            ),
            (
                "/fx/sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/hwmon1",
                "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0",
            ),
            ("/elsewhere/hwmon7", "hwmon7"),
        ] {
            // Paths that do not exist are not canonicalized and are used as they are.
            assert_eq!(
                chip_id("hwmon7", Path::new(real), Some(dev)),
                want,
                "{real}"
            );
        }
    }
}

//! Thermal zones: temperature and trip points from `sys/class/thermal/thermal_zoneN`.
//!
//! Per `Documentation/ABI/testing/sysfs-class-thermal` and
//! `Documentation/driver-api/thermal/sysfs-api.rst`: `type` (text), `temp` and
//! `trip_point_N_temp` in millidegrees Celsius, `trip_point_N_type` (`critical`, `hot`,
//! `passive`, `active`).
//!
//! Readings (gauges): `zone_temp_celsius` (labels `zone` = "thermal_zone0", `type`),
//! `zone_trip_celsius` (labels `zone`, `type`, `trip` = "0", `trip_type`). Cooling
//! devices in the same class directory are not read.

use std::path::Path;

use crate::reading::{Reading, Source};
use crate::sysfs::{Collector, index_of};
use crate::{Root, Scan, Sensor, timed};

/// Where the thermal class directory is, under the root.
pub const CLASS_DIR: &str = "sys/class/thermal";

/// Reads every thermal zone.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThermalSensor;

impl Sensor for ThermalSensor {
    fn source(&self) -> Source {
        Source::Thermal
    }

    fn read(&mut self, root: &Root) -> Scan {
        timed(Source::Thermal, |c| collect(&root.join(CLASS_DIR), c))
    }
}

fn collect(dir: &Path, c: &mut Collector) -> bool {
    let Some(entries) = c.list(dir) else {
        return false;
    };
    let mut present = false;
    for (zone, path) in entries {
        if index_of(&zone, "thermal_zone").is_none() {
            continue;
        }
        present = true;
        let ty = c.text(&path.join("type")).unwrap_or_default();
        if let Some(t) = c.i64(&path.join("temp")) {
            c.push(
                Reading::gauge(Source::Thermal, "zone_temp_celsius", t as f64 / 1000.0)
                    .label("zone", zone.as_str())
                    .label("type", ty.as_str()),
            );
        }
        let Some(files) = c.list(&path) else {
            continue;
        };
        for (file, tpath) in &files {
            let Some(trip) = file
                .strip_prefix("trip_point_")
                .and_then(|r| r.strip_suffix("_temp"))
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Some(t) = c.i64(tpath) else {
                continue;
            };
            let trip_type = c
                .text(&path.join(format!("trip_point_{trip}_type")))
                .unwrap_or_default();
            c.push(
                Reading::gauge(Source::Thermal, "zone_trip_celsius", t as f64 / 1000.0)
                    .label("zone", zone.as_str())
                    .label("type", ty.as_str())
                    .label("trip", trip)
                    .label("trip_type", trip_type),
            );
        }
    }
    present
}

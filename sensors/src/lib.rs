//! lifeboat-sensors: read the hardware signals that come before a failure.
//!
//! Every reader works under a [`Root`] passed in (`/` on a node, a fixture tree in
//! tests) and returns [`Reading`]s in base units. See [`reading`] for the model.
//!
//! # Using it
//!
//! ```
//! use lifeboat_sensors::{Root, all_sensors, read_all};
//! let root = Root::new("/nonexistent-fixture");
//! let mut sensors = all_sensors();
//! for scan in read_all(&root, &mut sensors) {
//!     assert!(!scan.present); // nothing there: every source is absent, none failed
//!     assert!(scan.errors.is_empty());
//! }
//! ```
//!
//! A source that is not on the node (no EDAC driver, no InfiniBand) is *absent*
//! (`present == false`), never an error. A file that cannot be read or parsed is a
//! [`SensorError`] naming the path, counted in that source's [`Scan`]; the other files
//! of the source are still read. Readers never panic on what the kernel supplies.
//!
//! # Sources and the readings they produce
//!
//! Names carry their unit as suffix; counters carry no `_total` (the exporter adds it).
//! [`catalogue`] has the same names as data, for validating what a program looks for.
//!
//! | source | module | names | labels |
//! |---|---|---|---|
//! | `edac` | [`edac`] | `mc_ce_count`, `mc_ue_count`, `mc_ce_noinfo_count`, `mc_ue_noinfo_count` (counters), `mc_size_bytes`; `dimm_ce_count`, `dimm_ue_count` (counters), `dimm_size_bytes` | `controller`, `mc_name`; `dimm`, `dimm_label`, `dimm_location` |
//! | `hwmon` | [`hwmon`] | `temp_celsius`, `temp_max_celsius`, `temp_crit_celsius`, `temp_emergency_celsius`, `temp_min_celsius`, `temp_lcrit_celsius`, `temp_alarm`, `temp_crit_alarm`, `temp_max_alarm`, `temp_min_alarm`, `fan_rpm`, `fan_min_rpm`, `fan_alarm`, `in_volts`, `in_min_volts`, `in_max_volts`, `in_alarm`, `power_watts`, `power_average_watts` | `chip`, `chip_name`, `sensor`, `label` |
//! | `thermal` | [`thermal`] | `zone_temp_celsius`, `zone_trip_celsius` | `zone`, `type`, `trip`, `trip_type` |
//! | `infiniband` | [`infiniband`] | every `counters/` file by its name, every `hw_counters/` file as `hw_<name>` (counters); `port_state`, `port_phys_state`, `port_rate_bytes_per_second` | `device`, `port`, `state` |
//! | `netdev` | [`netdev`] | the error statistics by file name ([`netdev::STATISTICS`]), `carrier_changes` (counters) | `device` |
//! | `pcie_aer` | [`pcie_aer`] | `aer_correctable`, `aer_nonfatal`, `aer_fatal` (per error name), `aer_correctable_errors`, `aer_nonfatal_errors`, `aer_fatal_errors`, `aer_rootport_correctable_errors`, `aer_rootport_nonfatal_errors`, `aer_rootport_fatal_errors` (counters) | `device`, `error` |
//! | `rasdaemon` | [`rasdaemon`] | `mc_events`, `mc_errors`, `aer_events`, `mce_records`, `extlog_events`, `extlog_errors`, `arm_events`, `non_standard_events`, `devlink_events`, `disk_error_events`, `memory_failure_events` (counters), `log_malformed_lines` (counter) | per table, see the module |
//! | `lm_sensors` | [`lm_sensors`] | hwmon's names, values after the node's sensors3.conf (feature `libsensors-dev`, host root only; else absent) | `chip`, `chip_name` (libsensors' name), `sensor`, `label` |
//! | `host` | [`host`] | `load1`, `load5`, `load15`, `memory_total_bytes`, `memory_available_bytes` (gauges) | |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod catalogue;
pub mod edac;
mod error;
pub mod host;
pub mod hwmon;
pub mod infiniband;
pub mod lm_sensors;
pub mod netdev;
pub mod pcie_aer;
pub mod rasdaemon;
pub mod reading;
mod root;
mod sysfs;
pub mod thermal;

use std::time::{Duration, Instant};

pub use error::SensorError;
pub use reading::{Kind, Reading, SeriesKey, Source, TracePoint};
pub use root::Root;

/// One reader of one source. Readers keep whatever state makes the next read cheaper or
/// incremental (rasdaemon remembers the last row it counted); the sysfs readers keep
/// none.
pub trait Sensor: Send + std::fmt::Debug {
    /// Which source this reader reads.
    fn source(&self) -> Source;
    /// Reads everything the source offers under `root`. Never panics; failures of single
    /// files are in [`Scan::errors`].
    fn read(&mut self, root: &Root) -> Scan;
}

/// The result of reading one source once.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The source read.
    pub source: Source,
    /// Whether the source exists on this node (its sysfs directory, database, ...).
    /// An absent source has no readings and no errors.
    pub present: bool,
    /// What was read, in a stable order (by device, then attribute).
    pub readings: Vec<Reading>,
    /// Files that could not be read or parsed; the rest of the source was still read.
    pub errors: Vec<SensorError>,
    /// Wall time the read took.
    pub elapsed: Duration,
}

impl Scan {
    /// A scan that found `readings` and no error (present when it found any): what a
    /// replayed trace or a test hands to the code that renders or evaluates scans.
    pub fn of(source: Source, readings: Vec<Reading>) -> Scan {
        Scan {
            source,
            present: !readings.is_empty(),
            readings,
            errors: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// A scan of a source that is not on this node.
    pub fn absent(source: Source) -> Scan {
        Scan {
            source,
            present: false,
            readings: Vec::new(),
            errors: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }
}

/// Runs `collect` (which returns whether the source is present) and times it.
fn timed(source: Source, collect: impl FnOnce(&mut sysfs::Collector) -> bool) -> Scan {
    let start = Instant::now();
    let mut c = sysfs::Collector::new();
    let present = collect(&mut c);
    Scan {
        source,
        present,
        readings: c.readings,
        errors: c.errors,
        elapsed: start.elapsed(),
    }
}

/// Every reader, one per [`Source`], in [`Source::ALL`] order. The list is explicit: a
/// new source is added here.
pub fn all_sensors() -> Vec<Box<dyn Sensor>> {
    vec![
        Box::new(edac::EdacSensor),
        Box::new(hwmon::HwmonSensor),
        Box::new(thermal::ThermalSensor),
        Box::new(infiniband::InfinibandSensor),
        Box::new(netdev::NetdevSensor),
        Box::new(pcie_aer::PcieAerSensor),
        Box::new(rasdaemon::RasdaemonSensor::new()),
        Box::new(lm_sensors::LmSensorsSensor),
        Box::new(host::HostSensor),
    ]
}

/// Reads every sensor once under `root`, in order.
pub fn read_all(root: &Root, sensors: &mut [Box<dyn Sensor>]) -> Vec<Scan> {
    sensors.iter_mut().map(|s| s.read(root)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_sensors_follow_source_order() {
        let sources: Vec<Source> = all_sensors().iter().map(|s| s.source()).collect();
        assert_eq!(sources, Source::ALL);
    }

    #[test]
    fn empty_root_is_all_absent() {
        let dir = std::env::temp_dir().join(format!("lifeboat-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let scans = read_all(&Root::new(&dir), &mut all_sensors());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(scans.len(), Source::ALL.len());
        for s in scans {
            assert!(!s.present, "{} present in an empty tree", s.source);
            assert!(s.readings.is_empty() && s.errors.is_empty(), "{s:?}");
        }
    }
}

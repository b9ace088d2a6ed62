//! The reading model every source shares: what was measured, where, in which base unit.
//!
//! A [`Reading`] is one value of one sensor at one poll: `source` says which reader made
//! it, `name` what it measures (with its unit as suffix, as in Prometheus names:
//! `temp_celsius`, `size_bytes`; counters carry no `_total`, the exporter adds it),
//! `labels` where (controller, dimm_label, chip, sensor, device, port, ...), `value` the
//! number in base units, `kind` whether it only grows (counter) or goes up and down
//! (gauge). The same type is recorded as a trace (JSON Lines) and replayed by the rules.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The reader a reading comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// EDAC memory controllers (`/sys/devices/system/edac/mc`).
    Edac,
    /// hwmon chips (`/sys/class/hwmon`).
    Hwmon,
    /// Thermal zones (`/sys/class/thermal`).
    Thermal,
    /// InfiniBand port counters (`/sys/class/infiniband`).
    Infiniband,
    /// Network interface error statistics (`/sys/class/net/*/statistics`).
    Netdev,
    /// PCIe Advanced Error Reporting counters (`/sys/bus/pci/devices/*/aer_*`).
    PcieAer,
    /// rasdaemon's event database and log.
    Rasdaemon,
    /// Chip and feature labels from libsensors (optional feature).
    LmSensors,
    /// Host facts: load, memory.
    Host,
}

impl Source {
    /// Every source, in the order readers run and reports list them.
    pub const ALL: [Source; 9] = [
        Source::Edac,
        Source::Hwmon,
        Source::Thermal,
        Source::Infiniband,
        Source::Netdev,
        Source::PcieAer,
        Source::Rasdaemon,
        Source::LmSensors,
        Source::Host,
    ];

    /// The name used in rules, metrics and traces (`edac`, `pcie_aer`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Edac => "edac",
            Source::Hwmon => "hwmon",
            Source::Thermal => "thermal",
            Source::Infiniband => "infiniband",
            Source::Netdev => "netdev",
            Source::PcieAer => "pcie_aer",
            Source::Rasdaemon => "rasdaemon",
            Source::LmSensors => "lm_sensors",
            Source::Host => "host",
        }
    }

    /// The source with this name, if any.
    pub fn from_name(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a value only grows (until a reset) or moves freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Monotonic count of events; a drop means the counter was reset.
    Counter,
    /// A level: temperature, size, state.
    Gauge,
}

/// One value of one sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Which reader produced it.
    pub source: Source,
    /// What it measures, unit as suffix (`dimm_ce_count`, `temp_celsius`).
    pub name: String,
    /// Where: stable identifiers first (controller, dimm, chip, device, port).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The value in base units (celsius, bytes, volts, counts, seconds).
    pub value: f64,
    /// Counter or gauge.
    pub kind: Kind,
}

impl Reading {
    /// A counter reading.
    pub fn counter(source: Source, name: impl Into<String>, value: f64) -> Reading {
        Reading {
            source,
            name: name.into(),
            labels: BTreeMap::new(),
            value,
            kind: Kind::Counter,
        }
    }

    /// A gauge reading.
    pub fn gauge(source: Source, name: impl Into<String>, value: f64) -> Reading {
        Reading {
            source,
            name: name.into(),
            labels: BTreeMap::new(),
            value,
            kind: Kind::Gauge,
        }
    }

    /// The same reading with one more label.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Reading {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The identity of the series this reading belongs to: source, name and labels.
    pub fn series_key(&self) -> SeriesKey {
        SeriesKey {
            source: self.source,
            name: self.name.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// What identifies one time series: a reading without its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Reader.
    pub source: Source,
    /// Measured quantity.
    pub name: String,
    /// Location labels.
    pub labels: BTreeMap<String, String>,
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.name)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}=\"{v}\"")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// One line of a recorded trace (JSON Lines): a reading and when it was taken, in
/// seconds since the Unix epoch. `lifeboat agent --record` writes these and
/// `lifeboat rules test` replays them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracePoint {
    /// Seconds since the Unix epoch (fractional).
    pub t: f64,
    /// The reading.
    #[serde(flatten)]
    pub reading: Reading,
}

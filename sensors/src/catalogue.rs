//! The catalogue of reading names: which names (and their kinds) and which label keys
//! each source produces, for programs that check what they are asked to look for.
//!
//! lifeboat-triggers validates rules against it: a name that belongs to another source
//! can never match, a name unknown to a closed source is likely a typo. Some sources are
//! *open*: rasdaemon and lm_sensors (whose names grow with their tables) accept any name,
//! and InfiniBand accepts every `hw_*` counter (driver-specific) through
//! [`SourceInfo::open_prefixes`]. A reader that starts producing a new name adds it here;
//! a unit test reads every fixture tree and fails on a reading the catalogue lacks.

use crate::reading::{Kind, Source};

/// What is known about one source.
#[derive(Debug)]
pub struct SourceInfo {
    /// The source.
    pub source: Source,
    /// Known reading names and their kinds.
    pub names: &'static [(&'static str, Kind)],
    /// Name prefixes accepted without warning (driver-specific counters).
    pub open_prefixes: &'static [&'static str],
    /// True if any name is accepted without warning.
    pub open: bool,
    /// Label keys the readings carry.
    pub labels: &'static [&'static str],
}

use Kind::{Counter as C, Gauge as G};

const EDAC: &[(&str, Kind)] = &[
    ("mc_ce_count", C),
    ("mc_ue_count", C),
    ("mc_ce_noinfo_count", C),
    ("mc_ue_noinfo_count", C),
    ("mc_size_bytes", G),
    ("dimm_ce_count", C),
    ("dimm_ue_count", C),
    ("dimm_size_bytes", G),
];

const HWMON: &[(&str, Kind)] = &[
    ("temp_celsius", G),
    ("temp_max_celsius", G),
    ("temp_crit_celsius", G),
    ("temp_emergency_celsius", G),
    ("temp_crit_alarm", G),
    ("temp_max_alarm", G),
    ("temp_min_celsius", G),
    ("temp_lcrit_celsius", G),
    ("temp_alarm", G),
    ("temp_min_alarm", G),
    ("fan_rpm", G),
    ("fan_min_rpm", G),
    ("fan_alarm", G),
    ("in_volts", G),
    ("in_min_volts", G),
    ("in_max_volts", G),
    ("in_alarm", G),
    ("power_watts", G),
    ("power_average_watts", G),
];

const THERMAL: &[(&str, Kind)] = &[("zone_temp_celsius", G), ("zone_trip_celsius", G)];

const INFINIBAND: &[(&str, Kind)] = &[
    ("symbol_error", C),
    ("port_rcv_errors", C),
    ("link_error_recovery", C),
    ("link_downed", C),
    ("local_link_integrity_errors", C),
    ("excessive_buffer_overrun_errors", C),
    ("port_rcv_remote_physical_errors", C),
    ("port_xmit_discards", C),
    ("VL15_dropped", C),
    ("port_xmit_data", C),
    ("port_rcv_data", C),
    ("port_xmit_packets", C),
    ("port_rcv_packets", C),
    ("port_xmit_wait", C),
    ("port_rcv_constraint_errors", C),
    ("port_xmit_constraint_errors", C),
    ("port_rcv_switch_relay_errors", C),
    ("port_multicast_rcv_packets", C),
    ("port_multicast_xmit_packets", C),
    ("port_unicast_rcv_packets", C),
    ("port_unicast_xmit_packets", C),
    ("multicast_rcv_packets", C),
    ("multicast_xmit_packets", C),
    ("unicast_rcv_packets", C),
    ("unicast_xmit_packets", C),
    ("port_state", G),
    ("port_phys_state", G),
    ("port_rate_bytes_per_second", G),
];

const NETDEV: &[(&str, Kind)] = &[
    ("rx_crc_errors", C),
    ("rx_frame_errors", C),
    ("rx_missed_errors", C),
    ("tx_carrier_errors", C),
    ("rx_errors", C),
    ("tx_errors", C),
    ("rx_dropped", C),
    ("tx_dropped", C),
    ("rx_fifo_errors", C),
    ("tx_fifo_errors", C),
    ("rx_length_errors", C),
    ("rx_over_errors", C),
    ("tx_aborted_errors", C),
    ("tx_heartbeat_errors", C),
    ("tx_window_errors", C),
    ("collisions", C),
    ("rx_nohandler", C),
    ("carrier_changes", C),
];

const PCIE_AER: &[(&str, Kind)] = &[
    ("aer_correctable", C),
    ("aer_nonfatal", C),
    ("aer_fatal", C),
    ("aer_correctable_errors", C),
    ("aer_fatal_errors", C),
    ("aer_nonfatal_errors", C),
    ("aer_rootport_correctable_errors", C),
    ("aer_rootport_fatal_errors", C),
    ("aer_rootport_nonfatal_errors", C),
];

const RASDAEMON: &[(&str, Kind)] = &[
    ("mc_events", C),
    ("aer_events", C),
    ("mce_records", C),
    ("extlog_events", C),
    ("mc_errors", C),
    ("extlog_errors", C),
    ("arm_events", C),
    ("non_standard_events", C),
    ("devlink_events", C),
    ("disk_error_events", C),
    ("memory_failure_events", C),
    ("log_malformed_lines", C),
];

const HOST: &[(&str, Kind)] = &[
    ("load1", G),
    ("load5", G),
    ("load15", G),
    ("memory_total_bytes", G),
    ("memory_available_bytes", G),
];

/// What is known about `source`.
pub fn info(source: Source) -> SourceInfo {
    let (names, open_prefixes, open, labels): (_, &[&str], bool, &[&str]) = match source {
        Source::Edac => (
            EDAC,
            &[],
            false,
            &[
                "controller",
                "mc_name",
                "dimm",
                "dimm_label",
                "dimm_location",
            ],
        ),
        Source::Hwmon => (HWMON, &[], false, &["chip", "chip_name", "sensor", "label"]),
        Source::Thermal => (THERMAL, &[], false, &["zone", "type", "trip", "trip_type"]),
        Source::Infiniband => (INFINIBAND, &["hw_"], false, &["device", "port", "state"]),
        Source::Netdev => (NETDEV, &[], false, &["device"]),
        Source::PcieAer => (PCIE_AER, &[], false, &["device", "error"]),
        Source::Rasdaemon => (
            RASDAEMON,
            &[],
            true,
            &[
                "err_type",
                "dimm_label",
                "device",
                "error",
                "severity",
                "reporter",
                "action_result",
            ],
        ),
        Source::LmSensors => (&[], &[], true, &["chip", "chip_name", "sensor", "label"]),
        Source::Host => (HOST, &[], false, &[]),
    };
    SourceInfo {
        source,
        names,
        open_prefixes,
        open,
        labels,
    }
}

impl SourceInfo {
    /// The kind of a known name.
    pub fn kind_of(&self, name: &str) -> Option<Kind> {
        self.names.iter().find(|(n, _)| *n == name).map(|&(_, k)| k)
    }

    /// True if `name` is accepted without warning.
    pub fn accepts(&self, name: &str) -> bool {
        self.open
            || self.kind_of(name).is_some()
            || self.open_prefixes.iter().any(|p| name.starts_with(p))
    }

    /// True if readings of this source may carry labels not in [`SourceInfo::labels`].
    pub fn open_labels(&self) -> bool {
        self.open
    }
}

/// The sources (other than `except`) that produce `name`.
pub fn sources_of(name: &str, except: Source) -> Vec<Source> {
    Source::ALL
        .into_iter()
        .filter(|&s| s != except && info(s).kind_of(name).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Root, all_sensors, read_all};
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The catalogue is the sensors' own account of what they produce: every reading of
    /// every fixture tree (real sysfs, procfs and rasdaemon layouts) must be in it, with
    /// its kind, and carry only the label keys listed (open prefixes excepted; open
    /// sources list their names too, but may carry other labels).
    #[test]
    fn every_reading_of_the_fixtures_is_in_the_catalogue() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sensors");
        let mut trees: Vec<_> = std::fs::read_dir(&fixtures)
            .expect("the sensor fixtures")
            .map(|e| e.expect("a fixture").path())
            .filter(|p| p.is_dir())
            .collect();
        trees.sort();
        let mut missing = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for tree in &trees {
            for scan in read_all(&Root::new(tree), &mut all_sensors()) {
                let i = info(scan.source);
                for r in &scan.readings {
                    seen.insert((r.source, r.name.clone()));
                    let prefixed = i.open_prefixes.iter().any(|p| r.name.starts_with(p));
                    if !prefixed && i.kind_of(&r.name) != Some(r.kind) {
                        missing.insert(format!("{}: {} ({:?})", r.source, r.name, r.kind));
                    }
                    for key in r.labels.keys() {
                        if !i.open_labels() && !i.labels.contains(&key.as_str()) {
                            missing.insert(format!("{}: label {key}", r.source));
                        }
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "produced by the readers but not in the catalogue:\n{}",
            missing.into_iter().collect::<Vec<_>>().join("\n")
        );
        // Names the readers' own tables can produce, fixture or not.
        for kind in ["temp", "fan", "in", "power"] {
            for &(_, name, _) in crate::hwmon::attrs_of(kind).unwrap_or_default() {
                assert_eq!(
                    info(Source::Hwmon).kind_of(name),
                    Some(Kind::Gauge),
                    "{name}"
                );
            }
        }
        for &name in crate::netdev::STATISTICS {
            assert_eq!(
                info(Source::Netdev).kind_of(name),
                Some(Kind::Counter),
                "{name}"
            );
        }
        // The fixtures exercise every closed source.
        for s in Source::ALL {
            if !info(s).open {
                assert!(
                    seen.iter().any(|(src, _)| *src == s),
                    "no fixture reads {s}"
                );
            }
        }
    }

    #[test]
    fn every_source_has_an_entry_and_names_are_unique_per_source() {
        for s in Source::ALL {
            let i = info(s);
            let mut names: Vec<_> = i.names.iter().map(|(n, _)| *n).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "duplicate name in {s}");
        }
        assert_eq!(
            info(Source::Edac).kind_of("dimm_ce_count"),
            Some(Kind::Counter)
        );
        assert!(info(Source::Infiniband).accepts("hw_rx_icrc_encapsulated"));
        assert!(info(Source::Rasdaemon).accepts("devlink_events"));
        assert!(!info(Source::Edac).accepts("temp_celsius"));
        assert_eq!(
            sources_of("temp_celsius", Source::Edac),
            vec![Source::Hwmon]
        );
    }
}

//! lm-sensors: the hwmon chips as libsensors presents them, with the node's
//! configuration applied (`/etc/sensors3.conf`, `/etc/sensors.d/*`): its `label`
//! statements name the features, its `compute` statements scale the values (a voltage
//! behind a divider), its `ignore` statements hide features. On boards whose vendor
//! config is installed this is what operators know their sensors by.
//!
//! Built only with the cargo feature `libsensors-dev` (it links libsensors; building
//! needs Debian's `libsensors-dev` and `clang`). Without it the source is absent: the
//! [`hwmon`](crate::hwmon) reader reads the same sysfs attributes, raw.
//!
//! libsensors reads the host's `/sys` (it checks that `/sys` is a sysfs mount) and
//! `/etc`; it cannot be pointed at another root. So the source reads only when the root
//! is the host's, [`Root::host`], and is absent under any other root. Tests give it a
//! fixture tree by mounting it over `/sys/class` and `/sys/devices` in a private mount
//! namespace (`tests/sensors.rs`).
//!
//! Readings carry the [`hwmon`](crate::hwmon) names (`temp_celsius`, `in_volts`,
//! `fan_rpm`, ...) of the same attributes, in the units libsensors returns (Celsius,
//! volts, RPM, watts: the base units), and labels `chip` (the device path, as hwmon's),
//! `chip_name` (libsensors' chip name, `nct6776-isa-0290`), `sensor` (`in0`) and
//! `label` (the configured label, else the driver's, else the sensor).

use crate::reading::Source;
use crate::{Root, Scan, Sensor};

/// Whether this build reads libsensors (the cargo feature `libsensors-dev`). Without it
/// the source is always absent, whatever the node has: "not built", not "no hardware".
pub const BUILT: bool = cfg!(feature = "libsensors-dev");

/// The lm-sensors source. See the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct LmSensorsSensor;

impl Sensor for LmSensorsSensor {
    fn source(&self) -> Source {
        Source::LmSensors
    }

    fn read(&mut self, root: &Root) -> Scan {
        if BUILT && *root == Root::host() {
            libsensors::read()
        } else {
            Scan::absent(Source::LmSensors)
        }
    }
}

/// Without the feature there is no library to read.
#[cfg(not(feature = "libsensors-dev"))]
mod libsensors {
    pub(super) fn read() -> crate::Scan {
        crate::Scan::absent(crate::Source::LmSensors)
    }
}

#[cfg(feature = "libsensors-dev")]
mod libsensors {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, PoisonError};

    use lm_sensors::sub_feature::Flags;

    use crate::SensorError;
    use crate::hwmon::{attrs_of, chip_id};
    use crate::reading::{Reading, Source};
    use crate::sysfs::Collector;

    /// libsensors keeps its state in globals: one instance per process at a time.
    static LIBRARY: Mutex<()> = Mutex::new(());

    /// Where libsensors reads its configuration when none is given (lm-sensors'
    /// `lib/init.c`); named in configuration errors that come without a file.
    const DEFAULT_CONFIG: &str = "/etc/sensors3.conf";

    /// Configuration errors, collected instead of printed to stderr.
    #[derive(Debug, Default, Clone)]
    struct ConfigErrors(Arc<Mutex<Vec<SensorError>>>);

    impl lm_sensors::errors::Listener for ConfigErrors {
        fn on_lm_sensors_config_error(&self, error: &str, file: Option<&Path>, line: usize) {
            let path = file.map_or_else(|| PathBuf::from(DEFAULT_CONFIG), Path::to_path_buf);
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(SensorError::Libsensors {
                    path,
                    message: format!("line {line}: {error}"),
                });
        }

        fn on_lm_sensors_fatal_error(&self, error: &str, procedure: &str) {
            // libsensors aborts the process after this returns (out of memory): leave
            // the reason where the operator looks.
            eprintln!("lifeboat: libsensors: fatal error in {procedure}: {error}");
        }
    }

    pub(super) fn read() -> crate::Scan {
        crate::timed(Source::LmSensors, collect)
    }

    /// Initialize libsensors (which detects the chips and parses the configuration
    /// afresh: hot-plugged chips and configuration edits are seen at the next poll),
    /// read every readable value, and clean up. Returns whether any chip was found.
    fn collect(c: &mut Collector) -> bool {
        let _one = LIBRARY.lock().unwrap_or_else(PoisonError::into_inner);
        let errors = ConfigErrors::default();
        let init = lm_sensors::Initializer::default()
            .error_listener(Box::new(errors.clone()))
            .initialize();
        let config_errors =
            std::mem::take(&mut *errors.0.lock().unwrap_or_else(PoisonError::into_inner));
        let configured = config_errors.is_empty();
        c.errors.extend(config_errors);
        let sensors = match init {
            Ok(sensors) => sensors,
            // Failing without a configuration error: no sysfs, nothing to read.
            Err(_) if configured => return false,
            Err(e) => {
                c.errors.push(SensorError::Libsensors {
                    path: PathBuf::from(DEFAULT_CONFIG),
                    message: e.to_string(),
                });
                return true;
            }
        };
        let devices = std::fs::canonicalize("/sys/devices").ok();
        let mut present = false;
        for chip in sensors.chip_iter(None) {
            present = true;
            let chip_name = match chip.name() {
                Ok(name) => name,
                Err(e) => {
                    c.errors.push(SensorError::Libsensors {
                        path: chip.path().map(Path::to_path_buf).unwrap_or_default(),
                        message: format!("chip name: {e}"),
                    });
                    continue;
                }
            };
            let dir = chip.path().map(Path::to_path_buf).unwrap_or_default();
            let chip_path = chip_id(&chip_name, &dir, devices.as_deref());
            for feature in chip.feature_iter() {
                let Some(Ok(sensor)) = feature.name() else {
                    continue;
                };
                let kind = sensor.trim_end_matches(|ch: char| ch.is_ascii_digit());
                let Some(attrs) = attrs_of(kind) else {
                    continue;
                };
                let label = feature.label().unwrap_or_else(|_| sensor.to_owned());
                for sub in feature.sub_feature_iter() {
                    let Some(Ok(sub_name)) = sub.name() else {
                        continue;
                    };
                    if !sub.flags().is_some_and(|f| f.contains(Flags::READABLE)) {
                        continue;
                    }
                    let Some(suffix) = sub_name
                        .strip_prefix(sensor)
                        .and_then(|s| s.strip_prefix('_'))
                    else {
                        continue;
                    };
                    let Some(&(_, name, _)) = attrs.iter().find(|(s, _, _)| *s == suffix) else {
                        continue;
                    };
                    match sub.raw_value() {
                        Ok(value) => c.push(
                            Reading::gauge(Source::LmSensors, name, value)
                                .label("chip", chip_path.as_str())
                                .label("chip_name", chip_name.as_str())
                                .label("sensor", sensor)
                                .label("label", label.as_str()),
                        ),
                        Err(e) => c.errors.push(SensorError::Libsensors {
                            path: dir.join(sub_name),
                            message: e.to_string(),
                        }),
                    }
                }
            }
        }
        present
    }
}

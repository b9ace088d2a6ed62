//! lm-sensors (libsensors) chip and feature labels.
//!
//! libsensors is a C library; binding it needs `unsafe` FFI, which this crate forbids,
//! and its labels come from `/etc/sensors3.conf` on the host, not from a root that can
//! be a fixture tree. The sysfs data it labels is read by [`hwmon`](crate::hwmon)
//! (including each `tempN_label`), so in this build the source is always absent. An
//! optional cargo feature linking libsensors is not provided yet.

use crate::reading::Source;
use crate::{Root, Scan, Sensor};

/// The lm-sensors source: absent in this build, see the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct LmSensorsSensor;

impl Sensor for LmSensorsSensor {
    fn source(&self) -> Source {
        Source::LmSensors
    }

    fn read(&mut self, _root: &Root) -> Scan {
        Scan::absent(Source::LmSensors)
    }
}

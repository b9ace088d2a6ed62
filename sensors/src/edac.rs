//! EDAC memory controllers: per-controller and per-DIMM corrected/uncorrected error
//! counts from `sys/devices/system/edac/mc/mcN`.
//!
//! Layout (kernel `Documentation/ABI/testing/sysfs-devices-edac`,
//! `Documentation/admin-guide/ras.rst`):
//!
//! - `mcN/{mc_name,size_mb,ce_count,ue_count,ce_noinfo_count,ue_noinfo_count}`
//! - the modern layout, `mcN/dimmM/` or `mcN/rankM/` (csrow-less drivers use `rank`):
//!   `dimm_label`, `dimm_location` ("channel 0 slot 1 "), `size` (MiB),
//!   `dimm_ce_count`, `dimm_ue_count`;
//! - the legacy layout, `mcN/csrowM/`: `chK_ce_count`, `chK_ue_count` (absent on
//!   several drivers and kernels), `chK_dimm_label`, `size_mb` (of the whole csrow).
//!
//! When a controller has `dimm`/`rank` directories the `csrow` ones (which the kernel
//! also keeps under `CONFIG_EDAC_LEGACY_SYSFS`) describe the same memory and are not
//! read, so nothing is counted twice.
//!
//! Readings (labels `controller` = "0" for `mc0`, `mc_name` when present):
//! `mc_ce_count`, `mc_ue_count`, `mc_ce_noinfo_count`, `mc_ue_noinfo_count` (counters),
//! `mc_size_bytes` (gauge); per DIMM, with `dimm` ("dimm3", "rank2", "csrow0_ch1"),
//! `dimm_label` and `dimm_location` when present: `dimm_ce_count`, `dimm_ue_count`
//! (counters), `dimm_size_bytes` (gauge; not for the legacy layout, whose size is per
//! csrow).

use std::collections::BTreeSet;
use std::path::Path;

use crate::reading::{Reading, Source};
use crate::sysfs::{Collector, index_of};
use crate::{Root, Scan, Sensor, timed};

/// Where the controllers are, under the root.
pub const MC_DIR: &str = "sys/devices/system/edac/mc";

const MIB: f64 = 1024.0 * 1024.0;

/// Reads EDAC controllers and DIMMs.
#[derive(Debug, Default, Clone, Copy)]
pub struct EdacSensor;

impl Sensor for EdacSensor {
    fn source(&self) -> Source {
        Source::Edac
    }

    fn read(&mut self, root: &Root) -> Scan {
        timed(Source::Edac, |c| collect(&root.join(MC_DIR), c))
    }
}

fn collect(dir: &Path, c: &mut Collector) -> bool {
    let Some(entries) = c.list(dir) else {
        return false;
    };
    let mut present = false;
    for (name, path) in entries {
        let Some(index) = index_of(&name, "mc") else {
            continue;
        };
        present = true;
        controller(&index.to_string(), &path, c);
    }
    present
}

fn controller(controller: &str, dir: &Path, c: &mut Collector) {
    let mc_name = c.text(&dir.join("mc_name")).filter(|s| !s.is_empty());
    let base = |r: Reading| {
        let r = r.label("controller", controller);
        match &mc_name {
            Some(n) => r.label("mc_name", n.as_str()),
            None => r,
        }
    };
    for (file, name) in [
        ("ce_count", "mc_ce_count"),
        ("ue_count", "mc_ue_count"),
        ("ce_noinfo_count", "mc_ce_noinfo_count"),
        ("ue_noinfo_count", "mc_ue_noinfo_count"),
    ] {
        if let Some(v) = c.u64(&dir.join(file)) {
            c.push(base(Reading::counter(Source::Edac, name, v as f64)));
        }
    }
    if let Some(mb) = c.u64(&dir.join("size_mb")) {
        c.push(base(Reading::gauge(
            Source::Edac,
            "mc_size_bytes",
            mb as f64 * MIB,
        )));
    }

    let Some(entries) = c.list(dir) else {
        return;
    };
    let modern: Vec<_> = entries
        .iter()
        .filter(|(n, _)| index_of(n, "dimm").is_some() || index_of(n, "rank").is_some())
        .collect();
    if !modern.is_empty() {
        for (name, path) in modern {
            dimm(controller, name, path, c);
        }
        return;
    }
    for (name, path) in &entries {
        if index_of(name, "csrow").is_some() {
            csrow(controller, name, path, c);
        }
    }
}

fn dimm(controller: &str, dimm: &str, dir: &Path, c: &mut Collector) {
    let label = c.text(&dir.join("dimm_label")).filter(|s| !s.is_empty());
    let location = c
        .text(&dir.join("dimm_location"))
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty());
    let labelled = |r: Reading| {
        let mut r = r.label("controller", controller).label("dimm", dimm);
        if let Some(l) = &label {
            r = r.label("dimm_label", l.as_str());
        }
        if let Some(l) = &location {
            r = r.label("dimm_location", l.as_str());
        }
        r
    };
    for (file, name) in [
        ("dimm_ce_count", "dimm_ce_count"),
        ("dimm_ue_count", "dimm_ue_count"),
    ] {
        if let Some(v) = c.u64(&dir.join(file)) {
            c.push(labelled(Reading::counter(Source::Edac, name, v as f64)));
        }
    }
    if let Some(mb) = c.u64(&dir.join("size")) {
        c.push(labelled(Reading::gauge(
            Source::Edac,
            "dimm_size_bytes",
            mb as f64 * MIB,
        )));
    }
}

fn csrow(controller: &str, csrow: &str, dir: &Path, c: &mut Collector) {
    let Some(entries) = c.list(dir) else {
        return;
    };
    // Channels are those with any chK_ attribute; chK_ue_count may be missing.
    let channels: BTreeSet<u32> = entries
        .iter()
        .filter_map(|(n, _)| {
            let rest = n.strip_prefix("ch")?;
            let (k, attr) = rest.split_once('_')?;
            matches!(attr, "ce_count" | "ue_count" | "dimm_label")
                .then(|| k.parse().ok())
                .flatten()
        })
        .collect();
    for k in channels {
        let dimm = format!("{csrow}_ch{k}");
        let label = c
            .text(&dir.join(format!("ch{k}_dimm_label")))
            .filter(|s| !s.is_empty());
        for (attr, name) in [("ce_count", "dimm_ce_count"), ("ue_count", "dimm_ue_count")] {
            if let Some(v) = c.u64(&dir.join(format!("ch{k}_{attr}"))) {
                let mut r = Reading::counter(Source::Edac, name, v as f64)
                    .label("controller", controller)
                    .label("dimm", dimm.as_str());
                if let Some(l) = &label {
                    r = r.label("dimm_label", l.as_str());
                }
                c.push(r);
            }
        }
    }
}

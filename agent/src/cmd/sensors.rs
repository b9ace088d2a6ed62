//! `lifeboat sensors`: every reading the sensor readers find, as a table per source
//! (per controller and DIMM, per chip, per zone, per port, per device) with units, and
//! the absent sources with where they were looked for. Non-zero error counters are
//! highlighted on a terminal. `--json` prints the scans as data, unchanged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lifeboat_sensors::{
    Kind, Reading, Root, Scan, Source, all_sensors, edac, hwmon, infiniband, lm_sensors, netdev,
    pcie_aer, rasdaemon, read_all, thermal,
};
use lifeboat_triggers::eval::fmt_num;

use super::support::human;
use crate::cli::SensorsArgs;
use crate::table::{Align, Cell, Table, stdout_color};

/// Run `lifeboat sensors`: read every source once and print what was found. Files that
/// could not be read are listed under their source; they do not change the exit status.
pub fn run(args: &SensorsArgs) -> Result<ExitCode> {
    let root = args.root.clone().map_or_else(Root::host, Root::new);
    if args.root.is_some() && !root.path().is_dir() {
        anyhow::bail!("--root {}: not a directory", root.path().display());
    }
    let scans = read_all(&root, &mut all_sensors());
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&json(&root, &scans))?;
        s.push('\n');
        s
    } else {
        text(&scans, &root, lm_sensors::BUILT, stdout_color())
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Why `source` is absent under `root`: where it was looked for, or why it cannot be
/// read at all (lm_sensors without `libsensors-dev`, or under another root). `built`
/// says whether this binary reads libsensors.
pub fn absent_reason(source: Source, root: &Root, built: bool) -> String {
    let no = |rel: &str| format!("no {}", root.join(rel).display());
    match source {
        Source::Edac => format!("{}: no EDAC driver loaded", no(edac::MC_DIR)),
        Source::Hwmon => no(hwmon::CLASS_DIR),
        Source::Thermal => no(thermal::CLASS_DIR),
        Source::Infiniband => no(infiniband::CLASS_DIR),
        Source::Netdev => format!(
            "no interface with error statistics under {}",
            root.join(netdev::CLASS_DIR).display()
        ),
        Source::PcieAer => format!(
            "no device with AER counters under {}",
            root.join(pcie_aer::DEVICES_DIR).display()
        ),
        Source::Rasdaemon => format!(
            "{} and {}: rasdaemon is not installed or not running",
            no(rasdaemon::DB_PATH),
            no(rasdaemon::LOG_PATH)
        ),
        Source::LmSensors if *root != Root::host() => {
            "libsensors reads only the host's own /sys, never another root".to_owned()
        }
        Source::LmSensors if !built => "not built: this binary was built without \
             `--features libsensors-dev`; the hwmon source reads the same chips raw"
            .to_owned(),
        Source::LmSensors => "libsensors found no chip".to_owned(),
        Source::Host => no("proc/loadavg"),
    }
}

/// Sources in order: a heading per source with the number of readings and errors, its
/// table, its errors; an absent source in one line with the reason.
fn text(scans: &[Scan], root: &Root, built: bool, color: bool) -> String {
    let mut out = String::new();
    for scan in scans {
        if !scan.present {
            let _ = writeln!(
                out,
                "{}: absent ({})",
                scan.source,
                absent_reason(scan.source, root, built)
            );
            continue;
        }
        let _ = write!(out, "{}: {} readings", scan.source, scan.readings.len());
        match scan.errors.len() {
            0 => out.push('\n'),
            1 => out.push_str(", 1 error\n"),
            n => {
                let _ = writeln!(out, ", {n} errors");
            }
        }
        let rs = &scan.readings;
        match scan.source {
            Source::Edac => edac_tables(&mut out, rs, color),
            Source::Hwmon | Source::LmSensors => chip_tables(&mut out, rs, color),
            Source::Thermal => zone_table(&mut out, rs),
            Source::Infiniband => port_tables(&mut out, rs, color),
            Source::Netdev => by_device(&mut out, rs, "device", color),
            Source::PcieAer => aer_table(&mut out, rs, color),
            Source::Rasdaemon => event_table(&mut out, rs, color),
            Source::Host => host_table(&mut out, rs),
        }
        for e in &scan.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        out.push('\n');
    }
    out
}

/// A reading's value with its unit, from the name's suffix (base units).
fn with_unit(name: &str, v: f64) -> String {
    let n = fmt_num(v);
    if name.ends_with("_celsius") {
        format!("{n} °C")
    } else if name.ends_with("_volts") {
        format!("{n} V")
    } else if name.ends_with("_rpm") {
        format!("{n} RPM")
    } else if name.ends_with("_watts") {
        format!("{n} W")
    } else if name.ends_with("_bytes_per_second") {
        let bits = v * 8.0;
        if bits >= 1e9 {
            format!("{} Gb/s", fmt_num(bits / 1e9))
        } else {
            format!("{} Mb/s", fmt_num(bits / 1e6))
        }
    } else if name.ends_with("_bytes") && v >= 0.0 && v.fract() == 0.0 {
        human(v as u64)
    } else if name.ends_with("_seconds") {
        format!("{n} s")
    } else {
        n
    }
}

/// Whether a counter counts errors (not traffic): a non-zero one is highlighted.
fn is_error_counter(r: &Reading) -> bool {
    r.kind == Kind::Counter
        && !["_data", "_packets", "_bytes", "_wait", "carrier_changes"]
            .iter()
            .any(|s| r.name.ends_with(s))
}

/// The cell of a reading's value: with its unit, highlighted when it is a non-zero
/// error counter.
fn value_cell(r: &Reading) -> Cell {
    Cell::alert(
        with_unit(&r.name, r.value),
        is_error_counter(r) && r.value != 0.0,
    )
}

fn label<'a>(r: &'a Reading, key: &str) -> &'a str {
    r.labels.get(key).map_or("", String::as_str)
}

/// Readings grouped by the values of `keys`, groups in the order they first appear.
fn group<'a>(rs: &[&'a Reading], keys: &[&str]) -> Vec<(Vec<String>, Vec<&'a Reading>)> {
    let mut groups: Vec<(Vec<String>, Vec<&Reading>)> = Vec::new();
    for r in rs {
        let key: Vec<String> = keys.iter().map(|k| label(r, k).to_owned()).collect();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    groups
}

/// The value of `name` among `rs`, as a cell (empty if absent).
fn cell_of(rs: &[&Reading], name: &str) -> Cell {
    rs.iter()
        .find(|r| r.name == name)
        .map_or_else(Cell::default, |r| value_cell(r))
}

/// EDAC: one table of memory controllers, one of DIMMs (or csrow channels).
fn edac_tables(out: &mut String, rs: &[Reading], color: bool) {
    let all: Vec<&Reading> = rs.iter().collect();
    let (dimms, mcs): (Vec<&Reading>, Vec<&Reading>) =
        all.iter().partition(|r| r.labels.contains_key("dimm"));
    let mut t = Table::new(&[
        ("controller", Align::Left),
        ("name", Align::Left),
        ("size", Align::Right),
        ("CE", Align::Right),
        ("UE", Align::Right),
        ("CE no DIMM", Align::Right),
        ("UE no DIMM", Align::Right),
    ]);
    for (key, g) in group(&mcs, &["controller", "mc_name"]) {
        t.row(vec![
            key[0].clone().into(),
            key[1].clone().into(),
            cell_of(&g, "mc_size_bytes"),
            cell_of(&g, "mc_ce_count"),
            cell_of(&g, "mc_ue_count"),
            cell_of(&g, "mc_ce_noinfo_count"),
            cell_of(&g, "mc_ue_noinfo_count"),
        ]);
    }
    if !t.is_empty() {
        out.push_str(&t.render(2, color));
    }
    let mut t = Table::new(&[
        ("controller", Align::Left),
        ("dimm", Align::Left),
        ("label", Align::Left),
        ("location", Align::Left),
        ("size", Align::Right),
        ("CE", Align::Right),
        ("UE", Align::Right),
    ]);
    for (key, g) in group(
        &dimms,
        &["controller", "dimm", "dimm_label", "dimm_location"],
    ) {
        let mut row: Vec<Cell> = key.into_iter().map(Cell::new).collect();
        row.push(cell_of(&g, "dimm_size_bytes"));
        row.push(cell_of(&g, "dimm_ce_count"));
        row.push(cell_of(&g, "dimm_ue_count"));
        t.row(row);
    }
    if !t.is_empty() {
        out.push_str(&t.render(2, color));
    }
}

/// hwmon and lm_sensors: per chip, a row per sensor with its value, limits and alarms.
fn chip_tables(out: &mut String, rs: &[Reading], color: bool) {
    let all: Vec<&Reading> = rs.iter().collect();
    for (chip, readings) in group(&all, &["chip_name", "chip"]) {
        let _ = writeln!(out, "  {} ({})", chip[0], chip[1]);
        let mut t = Table::new(&[
            ("sensor", Align::Left),
            ("label", Align::Left),
            ("value", Align::Right),
            ("min", Align::Right),
            ("max", Align::Right),
            ("crit", Align::Right),
            ("other limits", Align::Left),
            ("alarms", Align::Left),
        ]);
        for (key, g) in group(&readings, &["sensor", "label"]) {
            let mut cells: BTreeMap<&str, Cell> = BTreeMap::new();
            let mut other = Vec::new();
            let mut alarms = Vec::new();
            for r in &g {
                let role = role_of(&r.name);
                if let Some(alarm) = role.strip_suffix("alarm") {
                    if r.value != 0.0 {
                        let what = alarm.trim_end_matches('_');
                        alarms.push(if what.is_empty() { "alarm" } else { what }.to_owned());
                    }
                    continue;
                }
                match role {
                    "" | "average" if !cells.contains_key("value") => {
                        cells.insert("value", value_cell(r));
                    }
                    "min" | "max" | "crit" => {
                        cells.insert(role, value_cell(r));
                    }
                    _ => other.push(format!("{role} {}", with_unit(&r.name, r.value))),
                }
            }
            let mut row = vec![Cell::new(key[0].as_str()), Cell::new(key[1].as_str())];
            for c in ["value", "min", "max", "crit"] {
                row.push(cells.remove(c).unwrap_or_default());
            }
            row.push(Cell::new(other.join(", ")));
            let any = !alarms.is_empty();
            row.push(Cell::alert(
                if any {
                    alarms.join(", ").to_uppercase()
                } else {
                    "-".to_owned()
                },
                any,
            ));
            t.row(row);
        }
        out.push_str(&t.render(4, color));
    }
}

/// `temp_crit_celsius` -> `crit`, `temp_celsius` -> ``, `fan_alarm` -> `alarm`.
fn role_of(name: &str) -> &str {
    let rest = [
        "temp_",
        "fan_",
        "in_",
        "power_",
        "curr_",
        "energy_",
        "humidity_",
    ]
    .iter()
    .find_map(|p| name.strip_prefix(p))
    .unwrap_or(name);
    for unit in [
        "celsius", "rpm", "volts", "watts", "amperes", "joules", "percent",
    ] {
        if rest == unit {
            return "";
        }
        if let Some(r) = rest.strip_suffix(unit).and_then(|r| r.strip_suffix('_')) {
            return r;
        }
    }
    rest
}

/// Thermal zones: a row per zone with its temperature and trip points.
fn zone_table(out: &mut String, rs: &[Reading]) {
    let all: Vec<&Reading> = rs.iter().collect();
    let mut t = Table::new(&[
        ("zone", Align::Left),
        ("type", Align::Left),
        ("temperature", Align::Right),
        ("trip points", Align::Left),
    ]);
    for (key, g) in group(&all, &["zone", "type"]) {
        let trips: Vec<String> = g
            .iter()
            .filter(|r| r.name == "zone_trip_celsius")
            .map(|r| format!("{} {}", label(r, "trip_type"), with_unit(&r.name, r.value)))
            .collect();
        t.row(vec![
            key[0].clone().into(),
            key[1].clone().into(),
            cell_of(&g, "zone_temp_celsius"),
            trips.join(", ").into(),
        ]);
    }
    out.push_str(&t.render(2, false));
}

/// InfiniBand: a table of ports (state, rate), then the counters with a column per port.
fn port_tables(out: &mut String, rs: &[Reading], color: bool) {
    let all: Vec<&Reading> = rs.iter().collect();
    let mut t = Table::new(&[
        ("device", Align::Left),
        ("port", Align::Left),
        ("state", Align::Left),
        ("physical", Align::Left),
        ("rate", Align::Right),
    ]);
    for (key, g) in group(&all, &["device", "port"]) {
        let state = |name: &str| {
            g.iter()
                .find(|r| r.name == name)
                .map_or(String::new(), |r| label(r, "state").to_owned())
        };
        t.row(vec![
            key[0].clone().into(),
            key[1].clone().into(),
            Cell::alert(state("port_state"), state("port_state") != "ACTIVE"),
            state("port_phys_state").into(),
            cell_of(&g, "port_rate_bytes_per_second"),
        ]);
    }
    out.push_str(&t.render(2, color));
    let counters: Vec<&Reading> = all
        .iter()
        .copied()
        .filter(|r| r.kind == Kind::Counter)
        .collect();
    let entities: Vec<String> = group(&counters, &["device", "port"])
        .into_iter()
        .map(|(k, _)| format!("{}/{}", k[0], k[1]))
        .collect();
    pivot(
        out,
        &counters,
        &entities,
        |r| format!("{}/{}", label(r, "device"), label(r, "port")),
        "counter",
        color,
    );
}

/// Counters of several devices: a row per counter, a column per device.
fn by_device(out: &mut String, rs: &[Reading], key: &str, color: bool) {
    let all: Vec<&Reading> = rs.iter().collect();
    let devices: Vec<String> = group(&all, &[key])
        .into_iter()
        .map(|(k, _)| k[0].clone())
        .collect();
    pivot(
        out,
        &all,
        &devices,
        |r| label(r, key).to_owned(),
        "statistic",
        color,
    );
}

/// `rs` as a table: a row per reading name (first-seen order), a column per entity.
fn pivot(
    out: &mut String,
    rs: &[&Reading],
    entities: &[String],
    entity_of: impl Fn(&Reading) -> String,
    first: &str,
    color: bool,
) {
    if rs.is_empty() {
        return;
    }
    let mut columns = vec![(first, Align::Left)];
    columns.extend(entities.iter().map(|e| (e.as_str(), Align::Right)));
    let mut t = Table::new(&columns);
    let mut names: Vec<&str> = Vec::new();
    for r in rs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    // Counters that are zero everywhere are named in one paragraph, not a row each.
    let mut zero = Vec::new();
    for name in names {
        let of_name: Vec<&&Reading> = rs.iter().filter(|r| r.name == name).collect();
        if of_name
            .iter()
            .all(|r| r.kind == Kind::Counter && r.value == 0.0)
        {
            zero.push(name);
            continue;
        }
        let mut row = vec![Cell::new(name)];
        for e in entities {
            row.push(
                of_name
                    .iter()
                    .find(|r| entity_of(r) == *e)
                    .map_or_else(Cell::default, |r| value_cell(r)),
            );
        }
        t.row(row);
    }
    if !t.is_empty() {
        out.push_str(&t.render(2, color));
    }
    if !zero.is_empty() {
        let everywhere = if entities.len() == 1 {
            ""
        } else {
            " everywhere"
        };
        wrap(out, &format!("0{everywhere}: {}", zero.join(", ")), 2, 88);
    }
}

/// `text` as lines of at most `width` characters, broken at spaces, indented.
fn wrap(out: &mut String, text: &str, indent: usize, width: usize) {
    let mut line = " ".repeat(indent);
    for word in text.split(' ') {
        if line.len() > indent && line.len() + 1 + word.len() > width {
            let _ = writeln!(out, "{line}");
            line = " ".repeat(indent + 2);
        } else if line.len() > indent {
            line.push(' ');
        }
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

/// PCIe AER: a row per device with its totals and the error kinds it has seen.
fn aer_table(out: &mut String, rs: &[Reading], color: bool) {
    let all: Vec<&Reading> = rs.iter().collect();
    let mut t = Table::new(&[
        ("device", Align::Left),
        ("correctable", Align::Right),
        ("nonfatal", Align::Right),
        ("fatal", Align::Right),
        ("root port c/nf/f", Align::Right),
        ("errors seen", Align::Left),
    ]);
    for (key, g) in group(&all, &["device"]) {
        let root: Vec<String> = ["correctable", "nonfatal", "fatal"]
            .iter()
            .filter_map(|k| {
                g.iter()
                    .find(|r| r.name == format!("aer_rootport_{k}_errors"))
                    .map(|r| fmt_num(r.value))
            })
            .collect();
        let seen: Vec<String> = g
            .iter()
            .filter(|r| r.labels.contains_key("error") && r.value != 0.0)
            .map(|r| {
                format!(
                    "{} {} ({})",
                    label(r, "error"),
                    fmt_num(r.value),
                    r.name.trim_start_matches("aer_")
                )
            })
            .collect();
        let any_root = root.iter().any(|v| v != "0");
        t.row(vec![
            key[0].clone().into(),
            cell_of(&g, "aer_correctable_errors"),
            cell_of(&g, "aer_nonfatal_errors"),
            cell_of(&g, "aer_fatal_errors"),
            Cell::alert(root.join("/"), any_root),
            Cell::alert(seen.join(", "), !seen.is_empty()),
        ]);
    }
    out.push_str(&t.render(2, color));
}

/// rasdaemon: a row per event series with its details.
fn event_table(out: &mut String, rs: &[Reading], color: bool) {
    let mut t = Table::new(&[
        ("event", Align::Left),
        ("count", Align::Right),
        ("details", Align::Left),
    ]);
    for r in rs {
        let details: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![
            r.name.as_str().into(),
            value_cell(r),
            details.join(" ").into(),
        ]);
    }
    out.push_str(&t.render(2, color));
}

/// Host facts, with units.
fn host_table(out: &mut String, rs: &[Reading]) {
    let mut t = Table::new(&[("fact", Align::Left), ("value", Align::Right)]);
    for r in rs {
        t.row(vec![r.name.as_str().into(), value_cell(r)]);
    }
    out.push_str(&t.render(2, false));
}

fn json(root: &Root, scans: &[Scan]) -> serde_json::Value {
    let sources: Vec<serde_json::Value> = scans
        .iter()
        .map(|s| {
            serde_json::json!({
                "source": s.source,
                "present": s.present,
                "readings": s.readings,
                "errors": s.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "root": root.path(), "sources": sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In the default build, on the host, lm_sensors says it is not built, not that
    /// the node lacks hardware; under a fixture root both builds say the same.
    #[test]
    fn lm_sensors_absent_says_why() {
        let scans = [Scan::of(Source::LmSensors, Vec::new())];
        let host = text(&scans, &Root::host(), false, false);
        assert_eq!(
            host,
            "lm_sensors: absent (not built: this binary was built without `--features libsensors-dev`; the hwmon source reads the same chips raw)\n"
        );
        let built = text(&scans, &Root::host(), true, false);
        assert_eq!(built, "lm_sensors: absent (libsensors found no chip)\n");
        let fx = Root::new("fx");
        assert_eq!(
            text(&scans, &fx, true, false),
            text(&scans, &fx, false, false)
        );
    }

    /// Non-zero error counters are bold red on a terminal; zeros and traffic are not.
    #[test]
    fn non_zero_error_counters_are_highlighted() {
        let dev = |name: &str, v: f64, d: &str| {
            Reading::counter(Source::Netdev, name, v).label("device", d)
        };
        let scans = [Scan::of(
            Source::Netdev,
            vec![
                dev("rx_errors", 3.0, "eno1"),
                dev("rx_errors", 0.0, "eno2"),
                dev("carrier_changes", 4.0, "eno1"),
                dev("carrier_changes", 0.0, "eno2"),
                dev("tx_errors", 0.0, "eno1"),
                dev("tx_errors", 0.0, "eno2"),
            ],
        )];
        let plain = text(&scans, &Root::new("fx"), false, false);
        assert_eq!(
            plain,
            "netdev: 6 readings\n  statistic        eno1  eno2\n  rx_errors           3     0\n  carrier_changes     4     0\n  0 everywhere: tx_errors\n\n"
        );
        let color = text(&scans, &Root::new("fx"), false, true);
        assert!(color.contains("\x1b[1;31m3\x1b[0m"), "{color:?}");
        assert_eq!(color.matches("\x1b[1;31m").count(), 1, "{color:?}");
    }

    #[test]
    fn units_from_names() {
        assert_eq!(with_unit("temp_celsius", 52.0), "52 °C");
        assert_eq!(with_unit("in_volts", 1.008), "1.008 V");
        assert_eq!(with_unit("mc_size_bytes", 68_719_476_736.0), "64.0 GiB");
        assert_eq!(
            with_unit("port_rate_bytes_per_second", 12_500_000_000.0),
            "100 Gb/s"
        );
        assert_eq!(role_of("temp_crit_alarm"), "crit_alarm");
        assert_eq!(role_of("temp_celsius"), "");
        assert_eq!(role_of("power_average_watts"), "average");
        assert_eq!(role_of("in_min_volts"), "min");
    }
}

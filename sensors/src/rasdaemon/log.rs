//! Parser of rasdaemon's text log lines into typed events (nom).
//!
//! rasdaemon prints one line per event, to its terminal with `-f` and to syslog
//! otherwise. A line has up to four parts:
//!
//! 1. a syslog prefix, BSD (`Jan 10 08:40:46 node01 rasdaemon[1157]: `) or RFC 3339
//!    (`2024-01-10T08:40:46.123+01:00 node01 rasdaemon[1157]: `), or none;
//! 2. the trace header libtraceevent prints (`<...>-1183  [000]     0.007051: `), or none;
//! 3. the event name and a colon (`mc_event:`);
//! 4. the body. Newer rasdaemon versions start it with a log level word (`err`,
//!    `crit`, `emerg`, ...) and all versions with a local timestamp
//!    (`2024-01-10 08:40:46 +0100`); the kernel's own trace format (what
//!    `trace_pipe` shows) has neither.
//!
//! Event bodies (rasdaemon's handlers; kernel `include/ras/ras_event.h` and
//! `include/trace/events/*.h` for the kernel forms):
//!
//! - `mc_event`: `1 Corrected error: memory read error on DIMM_A1 (mc: 0 location: 0:1:0
//!   address: 0x1234 grain: 32 syndrome: 0x0 detail)`; the kernel form writes `mc:0`.
//! - `aer_event`: `0000:3b:00.0 (name - vendor_id: 0x8086 device_id: 0x2030) Receiver
//!   Error Corrected` (the parenthesis only in newer versions), or the kernel form
//!   `0000:3b:00.0 PCIe Bus Error: severity=Corrected, Receiver Error, TLP Header=...`.
//! - `mce_record`: comma-separated items, `bank=N` (or `Name (bank=N)`), `status= ...`,
//!   `cpu= N`, `socketid= N`, `addr= ...`, a `... error` class.
//! - `extlog_mem_event`, `non_standard_event`, `arm_event`: free text with
//!   `key=value`/`key: value` items; the severity is taken when present.
//! - `devlink_health_report`: `bus_name=pci dev_name=0000:3b:00.0 driver_name=mlx5_core
//!   reporter_name=tx: message`.
//! - `block_rq_error` / `block_rq_complete` (disk errors): `8,0 W () 4096 + 8 [-5]`,
//!   device also as `8:0`.
//! - `memory_failure_event`: `pfn 0x12345: recovery action for dirty LRU page:
//!   Recovered`, or `pfn=0x12345 page_type=... action_result=...`.
//!
//! Parsing never fails as a whole: [`parse_log`] returns the events and, for each line
//! that names an event but whose body does not parse, a [`Malformed`] entry. Lines that
//! name no event (rasdaemon's start-up messages, other programs) are only counted.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while1};
use nom::character::complete::{char, digit1, hex_digit1, space0, space1};
use nom::combinator::{map_res, opt, recognize};
use nom::sequence::preceded;
use nom::{IResult, Parser};

/// One event from a log line.
#[derive(Debug, Clone, PartialEq)]
pub enum RasEvent {
    /// A memory controller (EDAC) error.
    Mc(McEvent),
    /// A PCIe AER error.
    Aer(AerEvent),
    /// An x86 machine check.
    Mce(MceRecord),
    /// An ACPI extended log memory error.
    Extlog(GenericEvent),
    /// A UEFI CPER non-standard section.
    NonStandard(GenericEvent),
    /// An ARM processor error.
    Arm(GenericEvent),
    /// A devlink health report.
    Devlink(DevlinkEvent),
    /// A block device I/O error.
    DiskError(DiskErrorEvent),
    /// A memory failure (poisoned page) recovery.
    MemoryFailure(MemoryFailureEvent),
}

/// `mc_event`.
#[derive(Debug, Clone, PartialEq)]
pub struct McEvent {
    /// rasdaemon's local timestamp, when printed.
    pub timestamp: Option<String>,
    /// Number of errors this event reports.
    pub count: u32,
    /// `Corrected`, `Uncorrected`, `Deferred`, `Fatal` or `Info`.
    pub err_type: String,
    /// The driver's message ("memory read error").
    pub msg: String,
    /// The DIMM label, when the driver knows it.
    pub label: Option<String>,
    /// Memory controller index.
    pub mc: u32,
    /// `top:middle:lower` layer position, as printed.
    pub location: Option<String>,
    /// Physical address, when printed.
    pub address: Option<u64>,
}

/// `aer_event`.
#[derive(Debug, Clone, PartialEq)]
pub struct AerEvent {
    /// rasdaemon's local timestamp, when printed.
    pub timestamp: Option<String>,
    /// PCI address of the device.
    pub device: String,
    /// `Corrected`, `Uncorrected (Non-Fatal)`, `Uncorrected (Fatal)`.
    pub err_type: String,
    /// The error bits, as printed.
    pub msg: String,
}

/// `mce_record`.
#[derive(Debug, Clone, PartialEq)]
pub struct MceRecord {
    /// rasdaemon's local timestamp, when printed.
    pub timestamp: Option<String>,
    /// MCA bank.
    pub bank: u32,
    /// The bank's name when printed before `(bank=N)` (AMD SMCA).
    pub bank_name: Option<String>,
    /// The class item ("Corrected error", "Uncorrected error"), when present.
    pub error: Option<String>,
    /// Every `key=value` item, in order, values trimmed.
    pub fields: Vec<(String, String)>,
}

impl MceRecord {
    /// The value of item `key`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `extlog_mem_event`, `non_standard_event`, `arm_event`: text with a severity.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericEvent {
    /// rasdaemon's local timestamp, when printed.
    pub timestamp: Option<String>,
    /// The severity item, when present (`severity: Corrected`, `severity=2`).
    pub severity: Option<String>,
    /// The body after the timestamp.
    pub text: String,
}

/// `devlink_health_report`.
#[derive(Debug, Clone, PartialEq)]
pub struct DevlinkEvent {
    /// rasdaemon's local timestamp, when printed.
    pub timestamp: Option<String>,
    /// Bus (`pci`).
    pub bus_name: String,
    /// Device (`0000:3b:00.0`).
    pub dev_name: String,
    /// Driver (`mlx5_core`).
    pub driver_name: String,
    /// Health reporter (`tx`, `fw`).
    pub reporter_name: String,
    /// The report.
    pub msg: String,
}

/// `block_rq_error` / `block_rq_complete` with an error.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskErrorEvent {
    /// rasdaemon's local timestamp, when printed.
    pub timestamp: Option<String>,
    /// `major:minor`.
    pub dev: String,
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub nr_sector: u64,
    /// The error, as printed (`-5`, `I/O error`), when present.
    pub error: Option<String>,
}

/// `memory_failure_event`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryFailureEvent {
    /// rasdaemon's local timestamp, when printed.
    pub timestamp: Option<String>,
    /// Page frame number.
    pub pfn: u64,
    /// Kind of page ("dirty LRU page").
    pub page_type: String,
    /// `Recovered`, `Failed`, `Ignored`, `Delayed`.
    pub action_result: String,
}

/// A line that names an event but does not parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// 1-based line number.
    pub line: usize,
    /// The event the line names.
    pub event: String,
    /// What failed.
    pub reason: String,
}

/// What a log holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogParse {
    /// Events, with their 1-based line numbers, in order.
    pub events: Vec<(usize, RasEvent)>,
    /// Event lines that did not parse.
    pub malformed: Vec<Malformed>,
    /// Lines that are not events (start-up messages, other programs, blank).
    pub other: usize,
}

/// The event names rasdaemon prints, longest first where one is a prefix of another.
const EVENTS: &[&str] = &[
    "mc_event",
    "aer_event",
    "mce_record",
    "extlog_mem_event",
    "non_standard_event",
    "arm_event",
    "devlink_health_report",
    "block_rq_error",
    "block_rq_complete",
    "memory_failure_event",
];

/// Parses every line of `text`.
pub fn parse_log(text: &str) -> LogParse {
    let mut out = LogParse::default();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            None => out.other += 1,
            Some((_, Ok(ev))) => out.events.push((i + 1, ev)),
            Some((event, Err(reason))) => out.malformed.push(Malformed {
                line: i + 1,
                event: event.to_string(),
                reason,
            }),
        }
    }
    out
}

/// Parses one line: `None` if it names no event, else the event name and the result.
pub fn parse_line(line: &str) -> Option<(&'static str, Result<RasEvent, String>)> {
    let (event, body) = find_event(line)?;
    Some((event, parse_body(event, body)))
}

/// Finds `NAME:` of a known event at a word start; returns it and the rest of the line.
/// Whatever precedes it is the syslog prefix and trace header.
fn find_event(line: &str) -> Option<(&'static str, &str)> {
    for (pos, _) in line.char_indices() {
        if pos > 0 && !line[..pos].ends_with(|c: char| c.is_whitespace()) {
            continue;
        }
        let rest = &line[pos..];
        for &ev in EVENTS {
            if let Some(body) = rest.strip_prefix(ev).and_then(|r| r.strip_prefix(':')) {
                return Some((ev, body));
            }
        }
    }
    None
}

fn parse_body(event: &str, body: &str) -> Result<RasEvent, String> {
    let (body, timestamp) = preamble(body).map_err(|e| format!("preamble: {e}"))?;
    let body = body.trim();
    match event {
        "mc_event" => mc(body, timestamp).map(RasEvent::Mc),
        "aer_event" => aer(body, timestamp).map(RasEvent::Aer),
        "mce_record" => mce(body, timestamp).map(RasEvent::Mce),
        "extlog_mem_event" => generic(body, timestamp).map(RasEvent::Extlog),
        "non_standard_event" => generic(body, timestamp).map(RasEvent::NonStandard),
        "arm_event" => generic(body, timestamp).map(RasEvent::Arm),
        "devlink_health_report" => devlink(body, timestamp).map(RasEvent::Devlink),
        "block_rq_error" | "block_rq_complete" => disk(body, timestamp).map(RasEvent::DiskError),
        "memory_failure_event" => memory_failure(body, timestamp).map(RasEvent::MemoryFailure),
        _ => Err(format!("unknown event {event}")),
    }
}

type Res<'a, T> = IResult<&'a str, T>;

fn level(i: &str) -> Res<'_, &str> {
    let (i, w) = alt((
        tag("emerg"),
        tag("alert"),
        tag("crit"),
        tag("err"),
        tag("warning"),
        tag("warn"),
        tag("notice"),
        tag("info"),
        tag("debug"),
    ))
    .parse(i)?;
    let (i, _) = space1(i)?;
    Ok((i, w))
}

fn n_digits(n: usize) -> impl Fn(&str) -> Res<'_, &str> {
    move |i: &str| {
        let (rest, d) = digit1(i)?;
        if d.len() == n {
            Ok((rest, d))
        } else {
            Err(nom::Err::Error(nom::error::Error::new(
                i,
                nom::error::ErrorKind::Digit,
            )))
        }
    }
}

/// `2024-01-10 08:40:46 +0100`
fn timestamp(i: &str) -> Res<'_, &str> {
    recognize((
        n_digits(4),
        char('-'),
        n_digits(2),
        char('-'),
        n_digits(2),
        char(' '),
        n_digits(2),
        char(':'),
        n_digits(2),
        char(':'),
        n_digits(2),
        opt(preceded(
            char(' '),
            recognize((alt((char('+'), char('-'))), n_digits(4))),
        )),
    ))
    .parse(i)
}

/// Skips spaces, an optional level word and an optional timestamp.
fn preamble(body: &str) -> Result<(&str, Option<String>), String> {
    let r: Res<'_, Option<&str>> =
        preceded((space0, opt(level), space0), opt(timestamp)).parse(body);
    match r {
        Ok((rest, ts)) => Ok((rest, ts.map(str::to_string))),
        Err(e) => Err(e.to_string()),
    }
}

fn dec_u32(i: &str) -> Res<'_, u32> {
    map_res(digit1, str::parse::<u32>).parse(i)
}

fn hex_u64(i: &str) -> Res<'_, u64> {
    map_res(preceded(alt((tag("0x"), tag("0X"))), hex_digit1), |h| {
        u64::from_str_radix(h, 16)
    })
    .parse(i)
}

fn word(i: &str) -> Res<'_, &str> {
    take_while1(|c: char| !c.is_whitespace()).parse(i)
}

fn mc(body: &str, timestamp: Option<String>) -> Result<McEvent, String> {
    let head: Res<'_, (u32, &str)> = (
        dec_u32,
        preceded(space1, take_while1(|c: char| c.is_ascii_alphabetic())),
    )
        .parse(body);
    let (rest, (count, err_type)) = head.map_err(|_| "expected `COUNT TYPE error:`".to_string())?;
    let rest = rest
        .strip_prefix(" errors:")
        .or_else(|| rest.strip_prefix(" error:"))
        .ok_or("expected `error:` after the type")?;
    let open = rest
        .rfind(" (mc:")
        .or_else(|| rest.rfind("(mc:"))
        .ok_or("no `(mc:` part")?;
    let (text, tail) = rest.split_at(open);
    let tail = tail.trim_start().strip_prefix('(').unwrap_or(tail);
    let tail = tail.strip_suffix(')').unwrap_or(tail);
    let text = text.trim();
    let (msg, label) = match text.rfind(" on ") {
        Some(p) => (&text[..p], Some(text[p + 4..].trim().to_string())),
        None => match text.strip_prefix("on ") {
            Some(l) => ("", Some(l.trim().to_string())),
            None => (text, None),
        },
    };
    let mc_part: Res<'_, u32> = preceded((tag("mc:"), space0), dec_u32).parse(tail);
    let (mut tail, mc) = mc_part.map_err(|_| "expected `mc: N`".to_string())?;
    let mut location = None;
    let mut address = None;
    // The remaining items are `key: value` or `key:value`; take the two we type.
    while let Some(p) = tail.find(|c: char| !c.is_whitespace()) {
        tail = &tail[p..];
        if let Some(v) = tail.strip_prefix("location:") {
            let v = v.trim_start();
            let (r, loc) = recognize((
                opt(char('-')),
                digit1,
                opt((char(':'), opt(char('-')), digit1)),
                opt((char(':'), opt(char('-')), digit1)),
            ))
            .parse(v)
            .map_err(|_: nom::Err<nom::error::Error<&str>>| "bad location")?;
            location = Some(loc.to_string());
            tail = r;
        } else if let Some(v) = tail.strip_prefix("address:") {
            let (r, a) = hex_u64(v.trim_start()).map_err(|_| "bad address")?;
            address = Some(a);
            tail = r;
        } else {
            let (r, _) = word(tail).map_err(|_| "bad item")?;
            tail = r;
        }
    }
    Ok(McEvent {
        timestamp,
        count,
        err_type: err_type.to_string(),
        msg: msg.trim().to_string(),
        label: label.filter(|l| !l.is_empty()),
        mc,
        location,
        address,
    })
}

const AER_TYPES: &[&str] = &[
    "Uncorrected (Non-Fatal)",
    "Uncorrected (Fatal)",
    "Corrected",
    "Unknown severity",
];

fn is_pci_address(s: &str) -> bool {
    let r: Res<'_, &str> = recognize((
        opt((hex_digit1, char(':'))),
        hex_digit1,
        char(':'),
        hex_digit1,
        char('.'),
        hex_digit1,
    ))
    .parse(s);
    matches!(r, Ok(("", _)))
}

fn aer(body: &str, timestamp: Option<String>) -> Result<AerEvent, String> {
    let (rest, device) = word(body).map_err(|_| "no device")?;
    if !is_pci_address(device) {
        return Err(format!("{device:?} is not a PCI address"));
    }
    let rest = rest.trim();
    if let Some(k) = rest.strip_prefix("PCIe Bus Error: severity=") {
        // Kernel form: severity=Corrected, Receiver Error, TLP Header=Not available
        // (kernel include/ras/ras_event.h: "Corrected", "Fatal", "Uncorrected, non-fatal").
        let (err_type, errs) = [
            ("Corrected, ", "Corrected"),
            ("Uncorrected, non-fatal, ", "Uncorrected (Non-Fatal)"),
            ("Fatal, ", "Uncorrected (Fatal)"),
        ]
        .iter()
        .find_map(|(p, t)| k.strip_prefix(p).map(|rest| (*t, rest)))
        .ok_or_else(|| format!("unknown severity in {k:?}"))?;
        let msg = errs.split(", TLP Header").next().unwrap_or("").trim();
        return Ok(AerEvent {
            timestamp,
            device: device.to_string(),
            err_type: err_type.to_string(),
            msg: msg.to_string(),
        });
    }
    let ty = AER_TYPES
        .iter()
        .find(|t| rest.ends_with(*t))
        .ok_or("no error type at the end")?;
    let mut msg = rest[..rest.len() - ty.len()].trim();
    // Newer versions: "(Intel ... - vendor_id: 0x8086 device_id: 0x2030) " first.
    if msg.starts_with('(') {
        if let Some(end) = msg
            .find(") ")
            .or_else(|| msg.strip_suffix(')').map(|m| m.len()))
        {
            msg = msg[end + 1..].trim();
        }
    }
    Ok(AerEvent {
        timestamp,
        device: device.to_string(),
        err_type: ty.to_string(),
        msg: msg.to_string(),
    })
}

fn mce(body: &str, timestamp: Option<String>) -> Result<MceRecord, String> {
    let mut bank = None;
    let mut bank_name = None;
    let mut error = None;
    let mut fields = Vec::new();
    for item in body.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((name, b)) = item.split_once("(bank=") {
            let b = b.trim_end_matches(')').trim();
            bank = Some(b.parse::<u32>().map_err(|_| format!("bad bank {b:?}"))?);
            if !name.trim().is_empty() {
                bank_name = Some(name.trim().to_string());
            }
        } else if let Some((k, v)) = item.split_once('=') {
            let (k, v) = (k.trim(), v.trim());
            if k == "bank" {
                bank = Some(v.parse::<u32>().map_err(|_| format!("bad bank {v:?}"))?);
            }
            fields.push((k.to_string(), v.to_string()));
        } else if error.is_none() && item.ends_with(" error") {
            error = Some(item.to_string());
        }
    }
    Ok(MceRecord {
        timestamp,
        bank: bank.ok_or("no bank=")?,
        bank_name,
        error,
        fields,
    })
}

fn generic(body: &str, timestamp: Option<String>) -> Result<GenericEvent, String> {
    if body.is_empty() {
        return Err("empty body".into());
    }
    let severity = ["severity:", "severity="].iter().find_map(|k| {
        let at = body.find(k)?;
        let v = body[at + k.len()..].trim_start();
        let end = v.find([',', ' ']).unwrap_or(v.len());
        Some(v[..end].to_string()).filter(|s| !s.is_empty())
    });
    Ok(GenericEvent {
        timestamp,
        severity,
        text: body.to_string(),
    })
}

fn devlink(body: &str, timestamp: Option<String>) -> Result<DevlinkEvent, String> {
    fn kv<'a>(s: &'a str, key: &str) -> Result<(String, &'a str), String> {
        let s = s.trim_start();
        let v = s.strip_prefix(key).ok_or(format!("expected `{key}`"))?;
        let end = v.find(' ').unwrap_or(v.len());
        Ok((v[..end].to_string(), &v[end..]))
    }
    let (bus_name, r) = kv(body, "bus_name=")?;
    let (dev_name, r) = kv(r, "dev_name=")?;
    let (driver_name, r) = kv(r, "driver_name=")?;
    let r = r
        .trim_start()
        .strip_prefix("reporter_name=")
        .ok_or("expected `reporter_name=`")?;
    let (reporter, msg) = r.split_once(':').unwrap_or((r, ""));
    Ok(DevlinkEvent {
        timestamp,
        bus_name,
        dev_name,
        driver_name,
        reporter_name: reporter.trim().to_string(),
        msg: msg.trim().to_string(),
    })
}

fn disk(body: &str, timestamp: Option<String>) -> Result<DiskErrorEvent, String> {
    let dev: Res<'_, (&str, &str)> =
        (digit1, preceded(alt((char(','), char(':'))), digit1)).parse(body);
    let (rest, (maj, min)) = dev.map_err(|_| "expected `MAJOR,MINOR`")?;
    // Find "SECTOR + NR" anywhere after the device.
    let mut found = None;
    let words: Vec<&str> = rest.split_whitespace().collect();
    for w in words.windows(3) {
        if w[1] == "+" {
            if let (Ok(s), Ok(n)) = (w[0].parse::<u64>(), w[2].parse::<u64>()) {
                found = Some((s, n));
                break;
            }
        }
    }
    let (sector, nr_sector) = found.ok_or("no `SECTOR + NR`")?;
    let error = rest
        .rfind('[')
        .and_then(|a| {
            rest[a + 1..]
                .find(']')
                .map(|b| rest[a + 1..a + 1 + b].trim().to_string())
        })
        .or_else(|| rest.split_once("error=").map(|(_, e)| e.trim().to_string()))
        .filter(|e| !e.is_empty());
    Ok(DiskErrorEvent {
        timestamp,
        dev: format!("{maj}:{min}"),
        sector,
        nr_sector,
        error,
    })
}

fn memory_failure(body: &str, timestamp: Option<String>) -> Result<MemoryFailureEvent, String> {
    // Kernel form: "pfn 0x12345: recovery action for dirty LRU page: Recovered"
    if let Some(r) = body.strip_prefix("pfn ") {
        let (r, pfn) = hex_u64(r).map_err(|_| "bad pfn")?;
        let r = r
            .strip_prefix(": recovery action for ")
            .ok_or("expected `: recovery action for`")?;
        let (page_type, result) = r.rsplit_once(": ").ok_or("no action result")?;
        return Ok(MemoryFailureEvent {
            timestamp,
            pfn,
            page_type: page_type.trim().to_string(),
            action_result: result.trim().to_string(),
        });
    }
    // rasdaemon form: "pfn=0x12345 page_type=dirty LRU page action_result=Recovered"
    let r = body.strip_prefix("pfn=").ok_or("expected `pfn`")?;
    let (r, pfn) = hex_u64(r).map_err(|_| "bad pfn")?;
    let r = r
        .trim_start()
        .strip_prefix("page_type=")
        .ok_or("expected `page_type=`")?;
    let (page_type, result) = r
        .split_once(" action_result=")
        .ok_or("expected `action_result=`")?;
    Ok(MemoryFailureEvent {
        timestamp,
        pfn,
        page_type: page_type.trim().to_string(),
        action_result: result.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSLOG: &str = "Jan 10 08:40:46 node01 rasdaemon[1157]: ";
    const RFC3339: &str = "2024-01-10T08:40:46.123456+01:00 node01 rasdaemon[1157]: ";
    const TRACE: &str = "           <...>-1183  [000]     0.007051: ";
    const TRACE_NEW: &str = "           <...>-1183  [000] .....     0.007051: ";

    /// What a line must give.
    enum Want {
        /// No event in the line.
        Other,
        /// A malformed event line whose reason contains this.
        Bad(&'static str),
        /// This event.
        Event(RasEvent),
    }

    /// The one check: `line` parses as `want`, with every prefix combination rasdaemon
    /// lines come with (none, syslog BSD, syslog RFC 3339, each with or without the
    /// trace header of old and new libtraceevent).
    fn check(body: &str, want: Want) {
        for prefix in [
            String::new(),
            TRACE.to_string(),
            format!("{SYSLOG}{TRACE}"),
            format!("{RFC3339}{TRACE_NEW}"),
            SYSLOG.to_string(),
        ] {
            let line = format!("{prefix}{body}");
            let got = parse_line(&line);
            match (&want, got) {
                (Want::Other, None) => {}
                (Want::Bad(reason), Some((_, Err(e)))) => {
                    assert!(e.contains(reason), "{line:?}: error {e:?} lacks {reason:?}")
                }
                (Want::Event(ev), Some((_, Ok(got)))) => assert_eq!(&got, ev, "{line:?}"),
                (_, got) => panic!("{line:?}: unexpected {got:?}"),
            }
        }
    }

    fn ts(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn mc_event_old_new_and_kernel_forms() {
        let dimm0 = McEvent {
            timestamp: ts("2024-01-10 08:40:46 +0100"),
            count: 1,
            err_type: "Corrected".into(),
            msg: "memory read error".into(),
            label: Some("CPU_SrcID#0_MC#0_Chan#0_DIMM#0".into()),
            mc: 0,
            location: Some("0:0:-1".into()),
            address: Some(0x5e0f_7f40),
        };
        // rasdaemon 0.6.x: timestamp, no level.
        check(
            "mc_event:            2024-01-10 08:40:46 +0100 1 Corrected error: memory read error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0 (mc: 0 location: 0:0:-1 address: 0x5e0f7f40 grain: 32 syndrome: 0x0  err_code:0x0101:0x0090 socket:0 imc:0 rank:0 bg:0 ba:0 row:0x1 col:0x1)",
            Want::Event(RasEvent::Mc(dimm0.clone())),
        );
        // Newer rasdaemon: a level word first; several errors.
        check(
            "mc_event: err 2024-01-10 08:40:46 +0100 3 Corrected errors: memory read error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0 (mc: 0 location: 0:0:-1 address: 0x5e0f7f40 grain: 32)",
            Want::Event(RasEvent::Mc(McEvent {
                count: 3,
                ..dimm0.clone()
            })),
        );
        // No label, no address, location of one layer; uncorrected.
        check(
            "mc_event: crit 2024-01-10 08:40:46 +0100 1 Uncorrected error: (mc: 2 location: 5 grain: 6)",
            Want::Event(RasEvent::Mc(McEvent {
                timestamp: ts("2024-01-10 08:40:46 +0100"),
                count: 1,
                err_type: "Uncorrected".into(),
                msg: String::new(),
                label: None,
                mc: 2,
                location: Some("5".into()),
                address: None,
            })),
        );
        // The kernel's own trace format (trace_pipe): no timestamp, `mc:0`.
        check(
            "mc_event: 1 Corrected error: memory scrubbing error on DIMM_B1 (mc:1 location:0:1:0 address:0x00001000 grain:6 syndrome:0x00000000 area:DRAM)",
            Want::Event(RasEvent::Mc(McEvent {
                timestamp: None,
                count: 1,
                err_type: "Corrected".into(),
                msg: "memory scrubbing error".into(),
                label: Some("DIMM_B1".into()),
                mc: 1,
                location: Some("0:1:0".into()),
                address: Some(0x1000),
            })),
        );
        check(
            "mc_event: 2024-01-10 08:40:46 +0100 one Corrected error: x (mc: 0)",
            Want::Bad("COUNT TYPE"),
        );
        check(
            "mc_event: 1 Corrected error: lost the controller",
            Want::Bad("(mc:"),
        );
        check(
            "mc_event: 1 Corrected error: x (mc: zero)",
            Want::Bad("mc: N"),
        );
        check(
            "mc_event: 1 Corrected error: x (mc: 0 address: 0xZZ)",
            Want::Bad("bad address"),
        );
    }

    #[test]
    fn aer_event_forms() {
        let ev = |err_type: &str, msg: &str, timestamp: Option<String>| {
            Want::Event(RasEvent::Aer(AerEvent {
                timestamp,
                device: "0000:3b:00.0".into(),
                err_type: err_type.into(),
                msg: msg.into(),
            }))
        };
        check(
            "aer_event:            2019-05-27 18:04:12 +0200 0000:3b:00.0 Receiver Error Corrected",
            ev(
                "Corrected",
                "Receiver Error",
                ts("2019-05-27 18:04:12 +0200"),
            ),
        );
        check(
            "aer_event: crit 2019-05-27 18:04:12 +0200 0000:3b:00.0 (Ethernet controller: Mellanox Technologies MT28800 - vendor_id: 0x15b3 device_id: 0x1019) Completion Timeout TLP Header: 04000001 0000000f 3b000000 00000000 Uncorrected (Non-Fatal)",
            ev(
                "Uncorrected (Non-Fatal)",
                "Completion Timeout TLP Header: 04000001 0000000f 3b000000 00000000",
                ts("2019-05-27 18:04:12 +0200"),
            ),
        );
        check(
            "aer_event: emerg 2019-05-27 18:04:12 +0200 0000:3b:00.0 Malformed TLP Uncorrected (Fatal)",
            ev(
                "Uncorrected (Fatal)",
                "Malformed TLP",
                ts("2019-05-27 18:04:12 +0200"),
            ),
        );
        // Kernel trace format.
        check(
            "aer_event: 0000:3b:00.0 PCIe Bus Error: severity=Corrected, Receiver Error|Bad TLP, TLP Header=Not available",
            ev("Corrected", "Receiver Error|Bad TLP", None),
        );
        check(
            "aer_event: 0000:3b:00.0 PCIe Bus Error: severity=Uncorrected, non-fatal, Completion Timeout, TLP Header=Not available",
            ev("Uncorrected (Non-Fatal)", "Completion Timeout", None),
        );
        check(
            "aer_event: 2019-05-27 18:04:12 +0200 eth0 Receiver Error Corrected",
            Want::Bad("not a PCI address"),
        );
        check(
            "aer_event: 0000:3b:00.0 Receiver Error Sort of bad",
            Want::Bad("no error type"),
        );
        check(
            "aer_event: 0000:3b:00.0 PCIe Bus Error: severity=Meh, x",
            Want::Bad("unknown severity"),
        );
    }

    #[test]
    fn mce_record_intel_and_amd() {
        let intel = "mce_record:          2020-06-01 10:00:00 +0000 bank=7, status= 8c00004000010091, Corrected error, no action required., mci=CECC, mca=MEMORY CONTROLLER RD_CHANNEL1_ERR Transaction: Memory read error, memory_channel=1,csrow=0, cpu_type= Intel Xeon v3 (Haswell) EP/EX, cpu= 0, socketid= 0, misc= 1460cc86, addr= 3d4a5f000, mcgstatus=0, mcgcap= 7000c16, apicid= 0";
        let Some((_, Ok(RasEvent::Mce(m)))) = parse_line(intel) else {
            panic!("{intel}")
        };
        assert_eq!((m.bank, m.bank_name.as_deref()), (7, None));
        assert_eq!(m.error.as_deref(), Some("Corrected error"));
        assert_eq!(m.field("status"), Some("8c00004000010091"));
        assert_eq!(
            (m.field("cpu"), m.field("socketid")),
            (Some("0"), Some("0"))
        );
        assert_eq!(m.timestamp.as_deref(), Some("2020-06-01 10:00:00 +0000"));
        let amd = "mce_record: err 2021-02-08 11:24:51 +0100 Unified Memory Controller (bank=16), status= dc2040000000011b, Corrected error, no action required., mci=CECC, cpu_type= AMD Scalable MCA, cpu= 4, socketid= 0, addr= 3f5f2bd00, synd= 87028c0009400a07, ipid= 9600050f00, apicid= 4";
        check(
            amd,
            Want::Event(match parse_line(amd) {
                Some((_, Ok(ev))) => ev,
                other => panic!("{other:?}"),
            }),
        );
        let Some((_, Ok(RasEvent::Mce(m)))) = parse_line(amd) else {
            panic!("{amd}")
        };
        assert_eq!(
            (m.bank, m.bank_name.as_deref()),
            (16, Some("Unified Memory Controller"))
        );
        assert_eq!(m.field("cpu"), Some("4"));
        check(
            "mce_record: 2020-06-01 10:00:00 +0000 status= 0, cpu= 0",
            Want::Bad("no bank"),
        );
        check(
            "mce_record: 2020-06-01 10:00:00 +0000 bank=seven, cpu= 0",
            Want::Bad("bad bank"),
        );
    }

    #[test]
    fn extlog_non_standard_and_arm() {
        let generic = |severity: Option<&str>, text: &str| GenericEvent {
            timestamp: ts("2026-11-20 13:00:00 +0000"),
            severity: severity.map(str::to_string),
            text: text.into(),
        };
        check(
            "extlog_mem_event:    2026-11-20 13:00:00 +0000 1 corrected error: single-bit ECC, physical addr: 0x3f000, severity: corrected",
            Want::Event(RasEvent::Extlog(generic(
                Some("corrected"),
                "1 corrected error: single-bit ECC, physical addr: 0x3f000, severity: corrected",
            ))),
        );
        check(
            "non_standard_event: 2026-11-20 13:00:00 +0000 sec_type: 2826cc9f-448c-4c2b-86b6-a95394b7ef33 severity: recoverable",
            Want::Event(RasEvent::NonStandard(generic(
                Some("recoverable"),
                "sec_type: 2826cc9f-448c-4c2b-86b6-a95394b7ef33 severity: recoverable",
            ))),
        );
        check(
            "arm_event: 2026-11-20 13:00:00 +0000 error_count=1 affinity_level=2 mpidr=0x80000000",
            Want::Event(RasEvent::Arm(generic(
                None,
                "error_count=1 affinity_level=2 mpidr=0x80000000",
            ))),
        );
        check(
            "extlog_mem_event: 2026-11-20 13:00:00 +0000",
            Want::Bad("empty body"),
        );
    }

    #[test]
    fn devlink_disk_and_memory_failure() {
        check(
            "devlink_health_report: err 2026-11-20 14:00:00 +0000 bus_name=pci dev_name=0000:3b:00.0 driver_name=mlx5_core reporter_name=tx: TX timeout on queue: 4, SQ: 0x1a8",
            Want::Event(RasEvent::Devlink(DevlinkEvent {
                timestamp: ts("2026-11-20 14:00:00 +0000"),
                bus_name: "pci".into(),
                dev_name: "0000:3b:00.0".into(),
                driver_name: "mlx5_core".into(),
                reporter_name: "tx".into(),
                msg: "TX timeout on queue: 4, SQ: 0x1a8".into(),
            })),
        );
        check(
            "devlink_health_report: bus_name=pci driver_name=x",
            Want::Bad("dev_name="),
        );
        check(
            "block_rq_error: 2026-11-20 15:00:00 +0000 8,0 R () 123456 + 8 I/O error [-5]",
            Want::Event(RasEvent::DiskError(DiskErrorEvent {
                timestamp: ts("2026-11-20 15:00:00 +0000"),
                dev: "8:0".into(),
                sector: 123_456,
                nr_sector: 8,
                error: Some("-5".into()),
            })),
        );
        check(
            "block_rq_complete: 259:1 WS () 42 + 16 error=-61",
            Want::Event(RasEvent::DiskError(DiskErrorEvent {
                timestamp: None,
                dev: "259:1".into(),
                sector: 42,
                nr_sector: 16,
                error: Some("-61".into()),
            })),
        );
        check("block_rq_error: sda R 42 + 16", Want::Bad("MAJOR,MINOR"));
        check("block_rq_error: 8,0 R 42 16", Want::Bad("SECTOR + NR"));
        let mf = |page_type: &str, result: &str, timestamp| {
            Want::Event(RasEvent::MemoryFailure(MemoryFailureEvent {
                timestamp,
                pfn: 0x12345,
                page_type: page_type.into(),
                action_result: result.into(),
            }))
        };
        check(
            "memory_failure_event: 2026-11-20 16:00:00 +0000 pfn 0x12345: recovery action for dirty LRU page: Recovered",
            mf(
                "dirty LRU page",
                "Recovered",
                ts("2026-11-20 16:00:00 +0000"),
            ),
        );
        check(
            "memory_failure_event: pfn=0x12345 page_type=free buddy page action_result=Ignored",
            mf("free buddy page", "Ignored", None),
        );
        check(
            "memory_failure_event: pfn 12345 recovered",
            Want::Bad("bad pfn"),
        );
    }

    #[test]
    fn other_lines_are_not_events() {
        check("rasdaemon: ras:mc_event event enabled", Want::Other);
        check("rasdaemon: Recording aer_event events", Want::Other);
        check("sshd[4242]: Accepted publickey for root", Want::Other);
        check("", Want::Other);
        // An event name inside a word is not an event.
        check("xmc_event: 1 Corrected error: x (mc: 0)", Want::Other);
    }

    #[test]
    fn never_panics_on_damaged_lines() {
        // Every prefix of real lines, and each with one character replaced by text that
        // trips parsers (multi-byte UTF-8, separators, digits, NUL): no panic, ever.
        let lines = [
            "Jan 10 08:40:46 node01 rasdaemon[1157]:            <...>-1183  [000]     0.007051: mc_event: err 2024-01-10 08:40:46 +0100 3 Corrected errors: memory read error on DIMM#0 (mc: 0 location: 0:0:-1 address: 0x5e0f7f40 grain: 32)",
            "aer_event: crit 2019-05-27 18:04:12 +0200 0000:3b:00.0 (Ethernet controller - vendor_id: 0x15b3 device_id: 0x1019) Completion Timeout Uncorrected (Non-Fatal)",
            "aer_event: 0000:3b:00.0 PCIe Bus Error: severity=Uncorrected, non-fatal, Completion Timeout, TLP Header=Not available",
            "mce_record: 2021-02-08 11:24:51 +0100 Unified Memory Controller (bank=16), status= dc2040000000011b, Corrected error, cpu= 4",
            "devlink_health_report: bus_name=pci dev_name=0000:3b:00.0 driver_name=mlx5_core reporter_name=tx: TX timeout",
            "block_rq_error: 8,0 R () 123456 + 8 I/O error [-5]",
            "memory_failure_event: pfn 0x12345: recovery action for dirty LRU page: Recovered",
            "memory_failure_event: pfn=0x12346 page_type=free buddy page action_result=Ignored",
            "extlog_mem_event: 2026-11-20 13:00:00 +0000 1 corrected error, severity: corrected",
        ];
        let mut parsed = 0;
        for line in lines {
            assert!(matches!(parse_line(line), Some((_, Ok(_)))), "{line}");
            for (i, ch) in line.char_indices() {
                parsed += usize::from(parse_line(&line[..i]).is_some_and(|(_, r)| r.is_ok()));
                let rest = &line[i + ch.len_utf8()..];
                for repl in ["é", "(", ")", ":", " ", "9", "[", "]", "=", ",", "+", "\0"] {
                    let _ = parse_line(&format!("{}{repl}{rest}", &line[..i]));
                }
            }
        }
        assert!(parsed > 0, "some truncated lines still parse");
    }

    #[test]
    fn parse_log_counts_and_skips() {
        let text = "rasdaemon: start\n\
                    mc_event: 1 Corrected error: x on A (mc: 0)\n\
                    mc_event: garbage\n\
                    aer_event: 0000:00:01.0 Receiver Error Corrected\n";
        let p = parse_log(text);
        assert_eq!(p.other, 1);
        assert_eq!(p.events.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(p.malformed.len(), 1);
        assert_eq!(
            (p.malformed[0].line, p.malformed[0].event.as_str()),
            (3, "mc_event")
        );
    }
}

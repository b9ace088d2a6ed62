//! Target `rasdaemon_log`: rasdaemon's text log, through the parser and through the
//! sensor that reads the file.
//!
//! The input is parsed whole with [`parse_log`] (decoded as the sensor decodes it, UTF-8
//! with replacement characters), and the parse is checked to account for every line
//! exactly once. Then the same bytes are read as `var/log/rasdaemon.log` by a
//! [`RasdaemonSensor`] in two polls, the file first holding the first half of the input
//! and then all of it, so that a poll that ends inside a line and the next one that
//! continues from the saved offset are exercised too.

use crate::{Scratch, render};
use lifeboat_sensors::rasdaemon::RasdaemonSensor;
use lifeboat_sensors::rasdaemon::log::parse_log;
use lifeboat_sensors::{Root, Sensor};

/// Largest input the target looks at (the fixture log is 4 KiB).
pub const MAX_INPUT: usize = 64 << 10;

thread_local! {
    static SCRATCH: Scratch = Scratch::new();
}

/// Runs one input.
pub fn run(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let text = String::from_utf8_lossy(data);
    let parsed = parse_log(&text);
    let lines = text.lines().count();
    let accounted = parsed.events.len() + parsed.malformed.len() + parsed.other;
    assert_eq!(
        accounted, lines,
        "parse_log accounts for {accounted} lines of {lines}"
    );
    std::hint::black_box(format!("{parsed:?}"));

    // The sensor resolves its log path under the root; with the root at /proc/self/fd
    // the log is the scratch memfd, and the database path beneath it does not exist.
    SCRATCH.with(|scratch| {
        let root = Root::new("/proc/self/fd");
        let mut sensor = RasdaemonSensor::new().with_log_path(scratch.fd_name());
        scratch.set(&data[..data.len() / 2]);
        poll(&mut sensor, &root);
        scratch.set(data);
        poll(&mut sensor, &root);
    });
}

fn poll(sensor: &mut RasdaemonSensor, root: &Root) {
    let scan = sensor.read(root);
    assert!(scan.present, "the log exists, so the source is present");
    for e in &scan.errors {
        std::hint::black_box(render(e));
    }
    std::hint::black_box(format!("{:?}", scan.readings));
}

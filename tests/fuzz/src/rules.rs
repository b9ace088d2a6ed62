//! Target `rules`: the rules file parser and validator, as `lifeboat rules check` and
//! the agent's (re)load run them.
//!
//! The input, decoded as UTF-8 with replacement characters (a rules file is read as
//! text, so invalid UTF-8 never reaches the parser), goes through
//! [`Config::from_str`]. Its diagnostics are rendered (source line, caret under the
//! span, did-you-mean hints: where byte offsets meet multi-byte characters), and a
//! configuration that validates is handed to an [`Evaluator`] and stepped once.

use lifeboat_sensors::{Reading, Source};
use lifeboat_triggers::{Config, Evaluator};

/// Largest input the target looks at (the shipped configuration is 12 KiB).
pub const MAX_INPUT: usize = 64 << 10;

/// Runs one input.
pub fn run(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let text = String::from_utf8_lossy(data);
    match Config::from_str(&text, "fuzz.toml") {
        Ok(config) => {
            for w in &config.warnings {
                std::hint::black_box(w.to_string());
            }
            let mut eval = Evaluator::new(&config);
            let readings = [
                Reading::counter(Source::Edac, "dimm_ce_count", 1.0),
                Reading::gauge(Source::Hwmon, "temp_celsius", 90.0),
            ];
            std::hint::black_box(eval.step(0.0, &readings));
            std::hint::black_box(eval.step(3600.0, &readings));
        }
        Err(diags) => {
            std::hint::black_box(diags.to_string());
            std::hint::black_box(diags.summary());
        }
    }
}

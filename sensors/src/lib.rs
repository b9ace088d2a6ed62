//! lifeboat-sensors: read the hardware signals that come before a failure.
//!
//! Every reader works under a root directory passed in (`/` on a node, a fixture tree in
//! tests) and returns [`Reading`]s in base units. See [`reading`] for the model.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod reading;

pub use reading::{Kind, Reading, SeriesKey, Source, TracePoint};

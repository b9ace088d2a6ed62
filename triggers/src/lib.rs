//! lifeboat-triggers: the rules that decide when a node is at risk.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

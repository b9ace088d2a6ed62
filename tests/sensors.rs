//! End-to-end tests of `lifeboat sensors` against fixture sysfs trees (issue 3).

//! End-to-end tests of `lifeboat rules check|test` (issue 4).

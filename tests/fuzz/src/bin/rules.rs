//! Fuzz target `rules`: the rules parser and validator (see `lifeboat_fuzz::rules`).

lifeboat_fuzz::target_main!(lifeboat_fuzz::rules::run);

//! Fuzz target `rasdaemon_log`: rasdaemon's text log parser and reader (see `lifeboat_fuzz::rasdaemon_log`).

lifeboat_fuzz::target_main!(lifeboat_fuzz::rasdaemon_log::run);

//! Fuzz target `http`: the agent's HTTP request path (see `lifeboat_fuzz::http`).

lifeboat_fuzz::target_main!(lifeboat_fuzz::http::run);

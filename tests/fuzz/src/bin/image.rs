//! Fuzz target `image`: the context-image reader (see `lifeboat_fuzz::image`).

lifeboat_fuzz::target_main!(lifeboat_fuzz::image::run);

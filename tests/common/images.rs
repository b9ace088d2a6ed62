//! Images the tests make on purpose: a real checkpoint image read with the engine's
//! `image::Reader`, edited, and written back with `image::Writer`, its checksums valid,
//! as an attacker or a buggy tool would write it.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use lifeboat_engine::image::{Reader, Writer};
use lifeboat_engine::model::Image;

/// Rewrites the single-process image `src` into `dst` (replaced if it exists) with `edit`
/// applied to its metadata, the page data unchanged, with valid checksums: a deliberate
/// forgery.
pub fn forge(src: &Path, dst: &Path, edit: impl FnOnce(&mut Image)) {
    let reader = Reader::open(src).unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    assert_eq!(reader.images().len(), 1, "forge handles one process");
    let mut img = reader.image().clone();
    edit(&mut img);
    let mut pages = Vec::new();
    if let Some(mut p) = reader
        .pages()
        .expect("the PAGES section of the image to forge")
    {
        p.read_to_end(&mut pages)
            .expect("the page data of the image to forge");
    }
    let _ = fs::remove_file(dst);
    let mut w = Writer::create(dst, false)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dst.display()));
    w.metadata(&img).expect("write the forged metadata");
    let mut s = w.pages().expect("start the forged page data");
    s.write_all(&pages).expect("write the forged page data");
    s.finish().expect("finish the forged page data");
    w.commit(&img.pagemap).expect("commit the forged image");
}

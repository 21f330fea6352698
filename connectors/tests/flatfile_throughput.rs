//! Throughput check of the flat-file reader and decoder (ignored by default; it is only
//! meaningful in release mode):
//!
//! ```text
//! cargo test --release -p syncmesh-connectors --test flatfile_throughput -- --ignored --nocapture
//! ```
//!
//! Frames and decodes the quickstart ledger records (a 100-byte record with text, zoned,
//! packed and binary fields), repeated to about 100 MB in memory, and prints MB/s and
//! records/s for framing alone and for framing plus decoding.

use std::time::Instant;
use syncmesh_connectors::sources::flatfile::{
    DecodeOptions, Layout, RecordDecoder, RecordFormat, RecordReader,
};

#[test]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
fn ledger_throughput() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let layout = Layout::load(dir.join("ledger.cpy")).unwrap();
    let one = std::fs::read(dir.join("data/ledger-0001.dat")).unwrap();
    let data: Vec<u8> = one.iter().copied().cycle().take(one.len() * 100).collect();
    let mb = data.len() as f64 / 1e6;

    let start = Instant::now();
    let mut reader = RecordReader::new(&data[..], RecordFormat::Fixed, layout.record_length);
    let mut n = 0u64;
    let mut bytes = 0usize;
    while let Some(r) = reader.next_record().unwrap() {
        n += 1;
        bytes += r.data.len();
    }
    let t = start.elapsed().as_secs_f64();
    assert_eq!(bytes, data.len());
    println!(
        "framing: {n} records, {:.0} MB/s, {:.1} M records/s",
        mb / t,
        n as f64 / t / 1e6
    );

    let decoder = RecordDecoder::new(&layout, DecodeOptions::for_layout(&layout)).unwrap();
    let start = Instant::now();
    let mut reader = RecordReader::new(&data[..], RecordFormat::Fixed, layout.record_length);
    let mut row = Vec::new();
    let mut n = 0u64;
    while let Some(r) = reader.next_record().unwrap() {
        decoder.decode_into(r.data, &mut row).unwrap();
        n += 1;
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "framing + decoding: {n} records, {:.0} MB/s, {:.2} M records/s",
        mb / t,
        n as f64 / t / 1e6
    );
}

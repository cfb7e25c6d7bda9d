//! Fuzz the certificate table parser: it must never panic, and whatever it
//! accepts must satisfy the table invariants and survive a rebuild.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snp_certs::table::{self, Builder, ENTRY_SIZE};

fuzz_target!(|data: &[u8]| {
    let Ok(t) = table::parse(data) else {
        return;
    };
    let hlen = (t.entries().len() + 1) * ENTRY_SIZE;
    let mut ranges = Vec::new();
    let mut b = Builder::new().allow_oversize(true);
    for e in t.entries() {
        assert!(!e.guid.is_zero());
        let start = e.offset as usize;
        let end = start + e.length as usize;
        assert!(start >= hlen && end <= data.len() && e.length > 0);
        ranges.push((start, end));
        b = b.add(e.guid, t.data(e).unwrap().to_vec());
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap accepted");
    }
    let rebuilt = b.build().expect("a parsed table must rebuild");
    let t2 = table::parse(&rebuilt).expect("a rebuilt table must parse");
    assert_eq!(t2.entries().len(), t.entries().len());
    for (a, b) in t.entries().iter().zip(t2.entries()) {
        assert_eq!(a.guid, b.guid);
        assert_eq!(t.data(a), t2.data(b));
    }
});

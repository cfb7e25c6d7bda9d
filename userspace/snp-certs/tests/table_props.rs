//! Property tests of the certificate table builder and parser.

use proptest::prelude::*;
use snp_certs::table::{self, Builder, Guid, TableError, ENTRY_SIZE};

fn guid_strategy() -> impl Strategy<Value = Guid> {
    any::<[u8; 16]>()
        .prop_filter("non-zero", |g| *g != [0; 16])
        .prop_map(Guid)
}

fn entries_strategy() -> impl Strategy<Value = Vec<(Guid, Vec<u8>)>> {
    prop::collection::vec(
        (guid_strategy(), prop::collection::vec(any::<u8>(), 1..300)),
        0..6,
    )
    .prop_map(|v| {
        let mut seen = std::collections::HashSet::new();
        v.into_iter().filter(|(g, _)| seen.insert(*g)).collect()
    })
}

fn raw_entry(g: [u8; 16], off: u32, len: u32) -> Vec<u8> {
    let mut v = g.to_vec();
    v.extend_from_slice(&off.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the builder makes, the parser accepts and gives back.
    #[test]
    fn build_parse_round_trip(entries in entries_strategy()) {
        let mut b = Builder::new().allow_oversize(true);
        for (g, d) in &entries {
            b = b.add(*g, d.clone());
        }
        let blob = b.build().unwrap();
        let t = table::parse(&blob).unwrap();
        prop_assert_eq!(t.entries().len(), entries.len());
        for ((g, d), e) in entries.iter().zip(t.entries()) {
            prop_assert_eq!(*g, e.guid);
            prop_assert_eq!(t.data(e).unwrap(), d.as_slice());
        }
        let total: usize = (entries.len() + 1) * ENTRY_SIZE + entries.iter().map(|(_, d)| d.len()).sum::<usize>();
        prop_assert_eq!(blob.len(), total);
    }

    /// The parser never panics, and whatever it accepts satisfies every invariant.
    #[test]
    fn parse_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(t) = table::parse(&bytes) {
            let hlen = (t.entries().len() + 1) * ENTRY_SIZE;
            let mut ranges = Vec::new();
            for e in t.entries() {
                prop_assert!(!e.guid.is_zero());
                prop_assert!(e.offset as usize >= hlen);
                let end = e.offset as usize + e.length as usize;
                prop_assert!(end <= bytes.len());
                prop_assert!(e.length > 0);
                ranges.push((e.offset as usize, end));
            }
            ranges.sort();
            for w in ranges.windows(2) {
                prop_assert!(w[0].1 <= w[1].0);
            }
        }
    }

    /// Structured hostile tables: random offsets/lengths over a real header.
    #[test]
    fn parse_hostile_offsets(
        n in 1usize..5,
        offs in prop::collection::vec(any::<u32>(), 5),
        lens in prop::collection::vec(any::<u32>(), 5),
        small in prop::collection::vec(0u32..400, 10),
        use_small in any::<bool>(),
        tail in 0usize..400,
    ) {
        let mut blob = Vec::new();
        for i in 0..n {
            let (o, l) = if use_small { (small[i], small[i + 5]) } else { (offs[i], lens[i]) };
            blob.extend(raw_entry([i as u8 + 1; 16], o, l));
        }
        blob.extend_from_slice(&[0u8; ENTRY_SIZE]);
        blob.resize(blob.len() + tail, 0xab);
        match table::parse(&blob) {
            Ok(t) => prop_assert_eq!(t.entries().len(), n),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Truncating a valid table anywhere inside its header is always an error.
    #[test]
    fn truncated_header_is_error(entries in entries_strategy(), cut in 0usize..200) {
        let mut b = Builder::new().allow_oversize(true);
        for (g, d) in &entries {
            b = b.add(*g, d.clone());
        }
        let blob = b.build().unwrap();
        let hlen = (entries.len() + 1) * ENTRY_SIZE;
        let cut = cut % hlen;
        prop_assert!(table::parse(&blob[..cut]).is_err());
    }

    /// pages_needed is the exact ceiling.
    #[test]
    fn pages_are_exact_ceiling(len in 0usize..(1 << 40)) {
        let p = table::pages_needed(len) as u128;
        prop_assert!(p * 4096 >= len as u128);
        prop_assert!(p == 0 || (p - 1) * 4096 < len as u128);
    }
}

#[test]
fn duplicate_detected_far_apart() {
    let mut blob = Vec::new();
    for i in 0..10u8 {
        let g = if i == 9 { [1u8; 16] } else { [i + 1; 16] };
        blob.extend(raw_entry(g, 264 + u32::from(i), 1));
    }
    blob.extend_from_slice(&[0u8; ENTRY_SIZE]);
    blob.extend_from_slice(&[7u8; 10]);
    assert!(matches!(
        table::parse(&blob),
        Err(TableError::Duplicate {
            first: 0,
            second: 9,
            ..
        })
    ));
}

#[test]
fn header_length_and_guid_debug_form() {
    // GHCB: the table is 24-byte entries ended by an all-zero entry, so the
    // header of a table of n certificates is (n + 1) * 24 bytes.
    for n in 0..4usize {
        let mut b = Builder::new();
        for (i, k) in [
            table::CertKind::Ark,
            table::CertKind::Ask,
            table::CertKind::Vcek,
        ]
        .into_iter()
        .take(n)
        .enumerate()
        {
            b = b.add_kind(k, vec![i as u8 + 1; 7]);
        }
        let blob = b.build().unwrap();
        let t = table::parse(&blob).unwrap();
        assert_eq!(t.header_len(), (n + 1) * 24);
        assert_eq!(t.blob(), &blob[..]);
    }
    // Debug shows the GUID in its string form (what logs and test failures
    // print), e.g. the ARK's GUID from the GHCB specification.
    assert_eq!(
        format!("{:?}", table::GUID_ARK),
        "Guid(c0b406a4-a803-4952-9743-3fb6014cd0ae)"
    );
}

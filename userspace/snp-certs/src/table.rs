//! GHCB certificate tables.
//!
//! A certificate blob, as the hypervisor hands it to an SEV-SNP guest with the
//! SNP Extended Guest Request, starts with a table of 24-byte entries
//!
//! ```text
//! struct cert_table_entry { u8 guid[16]; u32 offset; u32 length; }  // little-endian u32s
//! ```
//!
//! ended by an all-zero entry. `offset` counts from the start of the blob, and the
//! certificates follow the table.
//!
//! # GUID byte order
//!
//! The 16 GUID bytes are stored in **RFC 4122 / string order**: the bytes of
//! `c0b406a4-a803-4952-9743-3fb6014cd0ae` are `c0 b4 06 a4 a8 03 49 52 97 43 3f b6
//! 01 4c d0 ae`. That is what AMD's reference tool (`uuid_parse()` from libuuid into
//! the entry) and virtee/sev (`Uuid::parse_str(..).as_bytes()`) put on the wire, and
//! what guest-side parsers compare against. It is *not* the EFI/Microsoft
//! mixed-endian layout (first three fields little-endian), which would give
//! `a4 06 b4 c0 03 a8 52 49 97 43 ...`. Because the two are easy to confuse, the
//! parser recognises a known GUID written in the mixed-endian layout and reports it
//! ([`Guid::mixed_endian_known`]) so that `snp-certs inspect` can flag such a table;
//! it still parses, as an entry of unknown type.

use std::fmt;

/// Size of one table entry in bytes.
pub const ENTRY_SIZE: usize = 24;
/// Guest page size used for the page count of the exit protocol.
pub const PAGE_SIZE: u64 = 4096;
/// Largest blob a Linux guest can receive (`SEV_FW_BLOB_MAX_SIZE`, 16 KiB).
pub const LINUX_GUEST_MAX: usize = 16 * 1024;

/// A 16-byte GUID in wire (RFC 4122 string) order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID, used only by the terminator entry.
    pub const ZERO: Guid = Guid([0; 16]);

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` into wire order.
    pub fn parse(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut n = 0usize;
        let mut i = 0usize;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b.get(i) != Some(&b'-') {
                    return None;
                }
                i = i.checked_add(1)?;
                continue;
            }
            let hi = hex_val(*b.get(i)?)?;
            let lo = hex_val(*b.get(i.checked_add(1)?)?)?;
            *out.get_mut(n)? = (hi << 4) | lo;
            n = n.checked_add(1)?;
            i = i.checked_add(2)?;
        }
        if n == 16 {
            Some(Guid(out))
        } else {
            None
        }
    }

    /// The same GUID in the EFI mixed-endian layout (first three fields byte-swapped).
    pub fn to_mixed_endian(self) -> Guid {
        let g = self.0;
        Guid([
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15],
        ])
    }

    /// If these wire bytes are a *known* GUID written in the EFI mixed-endian layout,
    /// returns that kind (a table produced by a tool with the wrong byte order).
    pub fn mixed_endian_known(self) -> Option<CertKind> {
        match CertKind::from_guid(self.to_mixed_endian()) {
            CertKind::Other(_) => None,
            k => Some(k),
        }
    }

    /// True for the all-zero GUID.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(c.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(c.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

// Compile-time parser for the GUID constants below: only ever evaluated in const
// items on fixed literals, where a panic or out-of-range index is a build error.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]
const fn g(s: &[u8; 36]) -> Guid {
    const fn hv(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("bad hex digit in GUID constant"),
        }
    }
    let mut out = [0u8; 16];
    let mut i = 0;
    let mut n = 0;
    while i < 36 {
        if s[i] == b'-' {
            i += 1;
            continue;
        }
        out[n] = (hv(s[i]) << 4) | hv(s[i + 1]);
        n += 1;
        i += 2;
    }
    Guid(out)
}

/// AMD Root Key certificate.
pub const GUID_ARK: Guid = g(b"c0b406a4-a803-4952-9743-3fb6014cd0ae");
/// AMD SEV Key certificate.
pub const GUID_ASK: Guid = g(b"4ab7b379-bbac-4fe4-a02f-05aef327c782");
/// Versioned Chip Endorsement Key certificate.
pub const GUID_VCEK: Guid = g(b"63da758d-e664-4564-adc5-f4b93be8accd");
/// Versioned Loaded Endorsement Key certificate.
pub const GUID_VLEK: Guid = g(b"a8074bc2-a25a-483e-aae6-39c045a0b8a1");
/// Certificate revocation list.
pub const GUID_CRL: Guid = g(b"92f81bc3-5811-4d3d-97ff-d19f88dc67ea");

/// The type of a table entry, from its GUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    Ark,
    Ask,
    Vcek,
    Vlek,
    Crl,
    Other(Guid),
}

impl CertKind {
    pub fn from_guid(g: Guid) -> CertKind {
        match g {
            x if x == GUID_ARK => CertKind::Ark,
            x if x == GUID_ASK => CertKind::Ask,
            x if x == GUID_VCEK => CertKind::Vcek,
            x if x == GUID_VLEK => CertKind::Vlek,
            x if x == GUID_CRL => CertKind::Crl,
            x => CertKind::Other(x),
        }
    }

    pub fn guid(self) -> Guid {
        match self {
            CertKind::Ark => GUID_ARK,
            CertKind::Ask => GUID_ASK,
            CertKind::Vcek => GUID_VCEK,
            CertKind::Vlek => GUID_VLEK,
            CertKind::Crl => GUID_CRL,
            CertKind::Other(g) => g,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CertKind::Ark => "ARK",
            CertKind::Ask => "ASK",
            CertKind::Vcek => "VCEK",
            CertKind::Vlek => "VLEK",
            CertKind::Crl => "CRL",
            CertKind::Other(_) => "OTHER",
        }
    }
}

/// Why a table was refused. Offsets in the variants are byte offsets in the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Fewer bytes than the entry starting at `at` needs (24).
    TruncatedHeader { at: usize, len: usize },
    /// The last entry read was not followed by an all-zero terminator before the end.
    MissingTerminator,
    /// The terminator has a zero GUID but a non-zero offset or length.
    DirtyTerminator { index: usize },
    /// An entry has a zero GUID but is not the terminator (offset/length set).
    ZeroGuid { index: usize },
    /// An entry's data starts inside the table header (entries plus terminator).
    OffsetInHeader {
        index: usize,
        offset: u32,
        header_len: usize,
    },
    /// offset + length does not fit in u32.
    LengthOverflow {
        index: usize,
        offset: u32,
        length: u32,
    },
    /// offset + length is past the end of the blob.
    PastEnd { index: usize, end: u64, len: usize },
    /// Two entries' data ranges overlap.
    Overlap { first: usize, second: usize },
    /// The same GUID appears twice.
    Duplicate {
        first: usize,
        second: usize,
        guid: Guid,
    },
    /// An entry has length zero (a certificate cannot be empty).
    EmptyEntry { index: usize },
    /// The blob is larger than u32 offsets can describe.
    TooLarge { len: usize },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::TruncatedHeader { at, len } => write!(
                f,
                "truncated table: entry at byte {at} needs {ENTRY_SIZE} bytes but the blob has {len}"
            ),
            TableError::MissingTerminator => write!(f, "table has no all-zero terminator entry"),
            TableError::DirtyTerminator { index } => write!(
                f,
                "entry {index} has a zero GUID but non-zero offset/length (malformed terminator)"
            ),
            TableError::ZeroGuid { index } => write!(f, "entry {index} has a zero GUID"),
            TableError::OffsetInHeader { index, offset, header_len } => write!(
                f,
                "entry {index}: offset {offset} points into the table header ({header_len} bytes)"
            ),
            TableError::LengthOverflow { index, offset, length } => write!(
                f,
                "entry {index}: offset {offset} + length {length} overflows u32"
            ),
            TableError::PastEnd { index, end, len } => write!(
                f,
                "entry {index}: data ends at byte {end}, past the end of the {len}-byte blob"
            ),
            TableError::Overlap { first, second } => {
                write!(f, "entries {first} and {second} have overlapping data")
            }
            TableError::Duplicate { first, second, guid } => {
                write!(f, "entries {first} and {second} have the same GUID {guid}")
            }
            TableError::EmptyEntry { index } => write!(f, "entry {index} has length 0"),
            TableError::TooLarge { len } => {
                write!(f, "blob of {len} bytes is too large for u32 offsets")
            }
        }
    }
}

impl std::error::Error for TableError {}

/// One parsed entry (its data is `blob[offset..offset+length]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub guid: Guid,
    pub offset: u32,
    pub length: u32,
}

impl Entry {
    pub fn kind(&self) -> CertKind {
        CertKind::from_guid(self.guid)
    }
}

/// A validated table over a borrowed blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table<'a> {
    blob: &'a [u8],
    entries: Vec<Entry>,
}

impl<'a> Table<'a> {
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The data of entry `e` (which must come from this table).
    pub fn data(&self, e: &Entry) -> Option<&'a [u8]> {
        let start = usize::try_from(e.offset).ok()?;
        let end = start.checked_add(usize::try_from(e.length).ok()?)?;
        self.blob.get(start..end)
    }

    /// The data of the first entry of kind `k`.
    pub fn find(&self, k: CertKind) -> Option<&'a [u8]> {
        let e = self.entries.iter().find(|e| e.kind() == k)?;
        self.data(e)
    }

    /// Size of the table header: entries plus terminator.
    pub fn header_len(&self) -> usize {
        header_len(self.entries.len()).unwrap_or(usize::MAX)
    }

    pub fn blob(&self) -> &'a [u8] {
        self.blob
    }
}

fn header_len(n_entries: usize) -> Option<usize> {
    n_entries.checked_add(1)?.checked_mul(ENTRY_SIZE)
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let s: [u8; 4] = b.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

/// Parses and fully validates a certificate blob.
///
/// Checks, in order: each entry header is complete; the table ends with an
/// all-zero entry; no entry has a zero GUID or zero length; every entry's data lies
/// after the header, with `offset + length` fitting in u32 and inside the blob;
/// no two GUIDs are equal; no two data ranges overlap. Never panics.
/// Trailing bytes after the last certificate (padding) are allowed.
pub fn parse(blob: &[u8]) -> Result<Table<'_>, TableError> {
    if u32::try_from(blob.len()).is_err() {
        return Err(TableError::TooLarge { len: blob.len() });
    }
    let mut entries = Vec::new();
    let mut at = 0usize;
    loop {
        let end = at
            .checked_add(ENTRY_SIZE)
            .ok_or(TableError::MissingTerminator)?;
        let raw = match blob.get(at..end) {
            Some(r) => r,
            None => {
                // A table that ends cleanly on an entry boundary without terminator
                // is "missing terminator"; a partial entry is "truncated".
                if at == blob.len() && at != 0 {
                    return Err(TableError::MissingTerminator);
                }
                return Err(TableError::TruncatedHeader {
                    at,
                    len: blob.len(),
                });
            }
        };
        let mut gb = [0u8; 16];
        gb.copy_from_slice(raw.get(..16).ok_or(TableError::MissingTerminator)?);
        let guid = Guid(gb);
        let offset = read_u32(raw, 16).ok_or(TableError::MissingTerminator)?;
        let length = read_u32(raw, 20).ok_or(TableError::MissingTerminator)?;
        let index = entries.len();
        if guid.is_zero() {
            if offset == 0 && length == 0 {
                break;
            }
            // A zero GUID with data is neither a valid entry nor a terminator.
            if offset != 0 && length != 0 {
                return Err(TableError::ZeroGuid { index });
            }
            return Err(TableError::DirtyTerminator { index });
        }
        entries.push(Entry {
            guid,
            offset,
            length,
        });
        at = end;
    }
    let hlen = header_len(entries.len()).ok_or(TableError::MissingTerminator)?;
    for (index, e) in entries.iter().enumerate() {
        if e.length == 0 {
            return Err(TableError::EmptyEntry { index });
        }
        let off =
            usize::try_from(e.offset).map_err(|_| TableError::TooLarge { len: blob.len() })?;
        if off < hlen {
            return Err(TableError::OffsetInHeader {
                index,
                offset: e.offset,
                header_len: hlen,
            });
        }
        let end = e
            .offset
            .checked_add(e.length)
            .ok_or(TableError::LengthOverflow {
                index,
                offset: e.offset,
                length: e.length,
            })?;
        let end_us = usize::try_from(end).map_err(|_| TableError::TooLarge { len: blob.len() })?;
        if end_us > blob.len() {
            return Err(TableError::PastEnd {
                index,
                end: u64::from(end),
                len: blob.len(),
            });
        }
    }
    // Duplicates and overlaps: sort indices, compare neighbours (O(n log n), so a
    // hostile table with many entries cannot make this quadratic).
    let mut by_guid: Vec<usize> = (0..entries.len()).collect();
    by_guid.sort_by_key(|&i| entries.get(i).map(|e| e.guid));
    for w in by_guid.windows(2) {
        if let (Some(&a), Some(&b)) = (w.first(), w.get(1)) {
            if let (Some(ea), Some(eb)) = (entries.get(a), entries.get(b)) {
                if ea.guid == eb.guid {
                    return Err(TableError::Duplicate {
                        first: a.min(b),
                        second: a.max(b),
                        guid: ea.guid,
                    });
                }
            }
        }
    }
    let mut by_off: Vec<usize> = (0..entries.len()).collect();
    by_off.sort_by_key(|&i| entries.get(i).map(|e| (e.offset, e.length)));
    for w in by_off.windows(2) {
        if let (Some(&a), Some(&b)) = (w.first(), w.get(1)) {
            if let (Some(ea), Some(eb)) = (entries.get(a), entries.get(b)) {
                // ea.offset <= eb.offset; overlap if eb starts before ea ends.
                // Both ends were checked not to overflow above.
                let ea_end = u64::from(ea.offset).saturating_add(u64::from(ea.length));
                if u64::from(eb.offset) < ea_end {
                    return Err(TableError::Overlap {
                        first: a.min(b),
                        second: a.max(b),
                    });
                }
            }
        }
    }
    Ok(Table { blob, entries })
}

/// Exact number of 4 KiB pages needed to hold `len` bytes (ceiling division).
pub fn pages_needed(len: usize) -> u64 {
    // usize is at most 64 bits on every target Linux KVM runs on.
    (len as u64).div_ceil(PAGE_SIZE)
}

/// Why the builder refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The blob would exceed the 16 KiB a Linux guest can receive.
    TooLargeForGuest { len: usize, max: usize },
    /// The blob would not be addressable with u32 offsets.
    TooLarge,
    /// The same GUID was added twice.
    Duplicate(Guid),
    /// The zero GUID is reserved for the terminator.
    ZeroGuid,
    /// A certificate with no bytes.
    Empty(Guid),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::TooLargeForGuest { len, max } => write!(
                f,
                "table would be {len} bytes, more than the {max} bytes a Linux guest can receive \
                 (allow it explicitly to build anyway)"
            ),
            BuildError::TooLarge => write!(f, "table too large for u32 offsets"),
            BuildError::Duplicate(g) => write!(f, "GUID {g} given twice"),
            BuildError::ZeroGuid => write!(f, "the zero GUID is reserved for the terminator"),
            BuildError::Empty(g) => write!(f, "certificate for GUID {g} is empty"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Builds a table from (GUID, bytes) entries, in the order given.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    entries: Vec<(Guid, Vec<u8>)>,
    allow_oversize: bool,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Allow blobs larger than [`LINUX_GUEST_MAX`].
    pub fn allow_oversize(mut self, allow: bool) -> Builder {
        self.allow_oversize = allow;
        self
    }

    pub fn add(mut self, guid: Guid, data: Vec<u8>) -> Builder {
        self.entries.push((guid, data));
        self
    }

    pub fn add_kind(self, kind: CertKind, data: Vec<u8>) -> Builder {
        self.add(kind.guid(), data)
    }

    pub fn build(&self) -> Result<Vec<u8>, BuildError> {
        let hlen = header_len(self.entries.len()).ok_or(BuildError::TooLarge)?;
        let mut total = hlen;
        for (i, (g, d)) in self.entries.iter().enumerate() {
            if g.is_zero() {
                return Err(BuildError::ZeroGuid);
            }
            if d.is_empty() {
                return Err(BuildError::Empty(*g));
            }
            if self.entries.iter().take(i).any(|(o, _)| o == g) {
                return Err(BuildError::Duplicate(*g));
            }
            total = total.checked_add(d.len()).ok_or(BuildError::TooLarge)?;
        }
        if u32::try_from(total).is_err() {
            return Err(BuildError::TooLarge);
        }
        if total > LINUX_GUEST_MAX && !self.allow_oversize {
            return Err(BuildError::TooLargeForGuest {
                len: total,
                max: LINUX_GUEST_MAX,
            });
        }
        let mut out = Vec::with_capacity(total);
        let mut off = hlen;
        for (g, d) in &self.entries {
            out.extend_from_slice(&g.0);
            let o = u32::try_from(off).map_err(|_| BuildError::TooLarge)?;
            let l = u32::try_from(d.len()).map_err(|_| BuildError::TooLarge)?;
            out.extend_from_slice(&o.to_le_bytes());
            out.extend_from_slice(&l.to_le_bytes());
            off = off.checked_add(d.len()).ok_or(BuildError::TooLarge)?;
        }
        out.extend_from_slice(&[0u8; ENTRY_SIZE]);
        for (_, d) in &self.entries {
            out.extend_from_slice(d);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(g: Guid, off: u32, len: u32) -> Vec<u8> {
        let mut v = g.0.to_vec();
        v.extend_from_slice(&off.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v
    }

    #[test]
    fn guid_wire_order_is_string_order() {
        assert_eq!(
            GUID_ARK.0,
            [
                0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c,
                0xd0, 0xae
            ]
        );
        assert_eq!(
            GUID_VCEK.to_string(),
            "63da758d-e664-4564-adc5-f4b93be8accd"
        );
        assert_eq!(
            Guid::parse("92F81BC3-5811-4d3d-97ff-d19f88dc67ea"),
            Some(GUID_CRL)
        );
        assert_eq!(Guid::parse("92f81bc3-5811-4d3d-97ff-d19f88dc67e"), None);
        assert_eq!(Guid::parse("92f81bc3x5811-4d3d-97ff-d19f88dc67ea"), None);
        let mixed = GUID_ARK.to_mixed_endian();
        assert_eq!(&mixed.0[..4], &[0xa4, 0x06, 0xb4, 0xc0]);
        assert_eq!(mixed.mixed_endian_known(), Some(CertKind::Ark));
        assert_eq!(GUID_ARK.mixed_endian_known(), None);
    }

    #[test]
    fn empty_table_is_valid() {
        let t = parse(&[0u8; 24]).unwrap();
        assert!(t.entries().is_empty());
        assert_eq!(Builder::new().build().unwrap(), vec![0u8; 24]);
    }

    #[test]
    fn build_then_parse() {
        let blob = Builder::new()
            .add_kind(CertKind::Ark, vec![1; 10])
            .add_kind(CertKind::Ask, vec![2; 20])
            .add_kind(CertKind::Vcek, vec![3; 30])
            .build()
            .unwrap();
        assert_eq!(blob.len(), 4 * 24 + 60);
        let t = parse(&blob).unwrap();
        assert_eq!(t.entries().len(), 3);
        assert_eq!(t.entries()[0].offset, 96);
        assert_eq!(t.find(CertKind::Ask).unwrap(), &[2; 20][..]);
        assert_eq!(t.find(CertKind::Vcek).unwrap(), &[3; 30][..]);
        assert_eq!(t.find(CertKind::Vlek), None);
    }

    #[test]
    fn builder_refusals() {
        let big = Builder::new().add_kind(CertKind::Ark, vec![0; LINUX_GUEST_MAX]);
        assert!(matches!(
            big.build(),
            Err(BuildError::TooLargeForGuest { .. })
        ));
        assert_eq!(
            big.allow_oversize(true).build().unwrap().len(),
            48 + LINUX_GUEST_MAX
        );
        let exact = Builder::new().add_kind(CertKind::Ark, vec![0; LINUX_GUEST_MAX - 48]);
        assert_eq!(exact.build().unwrap().len(), LINUX_GUEST_MAX);
        assert_eq!(
            Builder::new()
                .add_kind(CertKind::Ark, vec![1])
                .add_kind(CertKind::Ark, vec![2])
                .build(),
            Err(BuildError::Duplicate(GUID_ARK))
        );
        assert_eq!(
            Builder::new().add(Guid::ZERO, vec![1]).build(),
            Err(BuildError::ZeroGuid)
        );
        assert_eq!(
            Builder::new().add_kind(CertKind::Crl, vec![]).build(),
            Err(BuildError::Empty(GUID_CRL))
        );
    }

    #[test]
    fn pages() {
        assert_eq!(pages_needed(0), 0);
        assert_eq!(pages_needed(1), 1);
        assert_eq!(pages_needed(4095), 1);
        assert_eq!(pages_needed(4096), 1);
        assert_eq!(pages_needed(4097), 2);
        assert_eq!(pages_needed(16384), 4);
        assert_eq!(pages_needed(usize::MAX), (usize::MAX as u64) / 4096 + 1);
    }

    #[test]
    fn truncated_and_missing_terminator() {
        assert_eq!(
            parse(&[]),
            Err(TableError::TruncatedHeader { at: 0, len: 0 })
        );
        assert_eq!(
            parse(&[0u8; 23]),
            Err(TableError::TruncatedHeader { at: 0, len: 23 })
        );
        let mut b = entry(GUID_ARK, 48, 1);
        assert_eq!(parse(&b), Err(TableError::MissingTerminator));
        b.extend_from_slice(&[0u8; 10]);
        assert_eq!(
            parse(&b),
            Err(TableError::TruncatedHeader { at: 24, len: 34 })
        );
    }

    #[test]
    fn bad_offsets() {
        // offset inside the header
        let mut b = entry(GUID_ARK, 47, 1);
        b.extend_from_slice(&[0u8; 24]);
        b.extend_from_slice(&[9u8; 4]);
        assert!(matches!(
            parse(&b),
            Err(TableError::OffsetInHeader { index: 0, .. })
        ));
        // past the end
        let mut b = entry(GUID_ARK, 48, 5);
        b.extend_from_slice(&[0u8; 24]);
        b.extend_from_slice(&[9u8; 4]);
        assert!(matches!(
            parse(&b),
            Err(TableError::PastEnd {
                index: 0,
                end: 53,
                ..
            })
        ));
        // u32 overflow
        let mut b = entry(GUID_ARK, 48, u32::MAX);
        b.extend_from_slice(&[0u8; 24]);
        assert!(matches!(parse(&b), Err(TableError::LengthOverflow { .. })));
        // zero length
        let mut b = entry(GUID_ARK, 48, 0);
        b.extend_from_slice(&[0u8; 24]);
        assert_eq!(parse(&b), Err(TableError::EmptyEntry { index: 0 }));
    }

    #[test]
    fn overlap_and_duplicate() {
        let mut b = entry(GUID_ARK, 72, 4);
        b.extend(entry(GUID_ASK, 74, 4));
        b.extend_from_slice(&[0u8; 24]);
        b.extend_from_slice(&[1u8; 8]);
        assert_eq!(
            parse(&b),
            Err(TableError::Overlap {
                first: 0,
                second: 1
            })
        );
        let mut b = entry(GUID_ARK, 72, 4);
        b.extend(entry(GUID_ARK, 76, 4));
        b.extend_from_slice(&[0u8; 24]);
        b.extend_from_slice(&[1u8; 8]);
        assert!(matches!(
            parse(&b),
            Err(TableError::Duplicate {
                first: 0,
                second: 1,
                ..
            })
        ));
        // adjacent is fine
        let mut b = entry(GUID_ARK, 72, 4);
        b.extend(entry(GUID_ASK, 76, 4));
        b.extend_from_slice(&[0u8; 24]);
        b.extend_from_slice(&[1u8; 8]);
        assert_eq!(parse(&b).unwrap().entries().len(), 2);
    }

    #[test]
    fn zero_guid_entries() {
        let mut b = entry(Guid::ZERO, 48, 1);
        b.extend_from_slice(&[0u8; 24]);
        b.push(1);
        assert_eq!(parse(&b), Err(TableError::ZeroGuid { index: 0 }));
        let mut b = entry(Guid::ZERO, 0, 1);
        b.extend_from_slice(&[0u8; 24]);
        assert_eq!(parse(&b), Err(TableError::DirtyTerminator { index: 0 }));
    }

    #[test]
    fn trailing_padding_allowed() {
        let mut blob = Builder::new()
            .add_kind(CertKind::Vlek, vec![7; 100])
            .build()
            .unwrap();
        blob.resize(4096, 0);
        assert_eq!(parse(&blob).unwrap().entries().len(), 1);
    }
}

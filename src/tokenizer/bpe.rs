//! Byte-level BPE (GPT-2 style): byte <-> unicode mapping, rank-driven merges
//! inside each pre-token.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::index::{ByteTable, PieceIndex};
use super::specials::{SpecialEntry, SpecialMatcher};
use super::{ModelKind, PreTokenizer, TokenType, Tokenizer, TokenizerError};

/// GPT-2's `bytes_to_unicode` table: byte -> char.
pub(crate) fn byte_to_char() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        t[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    t
}

/// Decodes a byte-level token string to raw bytes: if every char is in the
/// byte table, the mapped bytes; otherwise the raw UTF-8 of the token
/// (as Hugging Face's ByteLevel decoder does).
/// `inv[c]` = byte for table chars (all below U+0200), or u16::MAX.
pub(crate) fn decode_piece(p: &[u8], inv: &[u16; 512], out: &mut Vec<u8>) {
    out.clear();
    let Ok(s) = std::str::from_utf8(p) else {
        out.extend_from_slice(p);
        return;
    };
    for c in s.chars() {
        match inv.get(c as usize).copied() {
            Some(b) if b != u16::MAX => out.push(b as u8),
            _ => {
                out.clear();
                out.extend_from_slice(p);
                return;
            }
        }
    }
}

pub(crate) fn derive(t: &mut Tokenizer) -> Result<(), TokenizerError> {
    let n = t.pieces.len();
    let table = byte_to_char();
    let mut inv = [u16::MAX; 512];
    for (b, &c) in table.iter().enumerate() {
        inv[c as usize] = b as u16;
    }
    let total = t.pieces.total_bytes();
    let mut piece_to_id = PieceIndex::with_capacity(n, total);
    let mut decoded = ByteTable::with_capacity(n, total);
    let mut buf = Vec::new();
    let mut specials = Vec::new();
    for (i, (p, ty)) in t.pieces.iter().zip(&t.types).enumerate() {
        let id = i as u32;
        if matches!(
            ty,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        ) && !p.is_empty()
        {
            specials.push(SpecialEntry {
                text: p.into(),
                id,
                always: *ty == TokenType::UserDefined,
            });
        }
        if !p.is_empty() {
            piece_to_id.insert(p, id);
        }
        decode_piece(p, &inv, &mut buf);
        decoded.push(&buf);
    }
    let mut byte_to_id = vec![u32::MAX; 256];
    let mut cbuf = [0u8; 4];
    for (b, &c) in table.iter().enumerate() {
        if let Some(id) = piece_to_id.get(c.encode_utf8(&mut cbuf).as_bytes()) {
            byte_to_id[b] = id;
        }
    }
    let mut merges = FxHashMap::default();
    merges.reserve(t.merge_list.len());
    let mut cat = Vec::new();
    for (rank, &(a, b)) in t.merge_list.iter().enumerate() {
        if a as usize >= n || b as usize >= n {
            return Err(TokenizerError::Invalid(format!(
                "merge {rank} refers to id out of range ({a}, {b})"
            )));
        }
        let (pa, pb) = (t.pieces.get(a as usize), t.pieces.get(b as usize));
        if let Some(&m) = t.merge_out.get(rank) {
            // Known from the serialized form; must still name a real token.
            if m as usize >= n {
                return Err(TokenizerError::Invalid(format!(
                    "merge {rank} result {m} out of range"
                )));
            }
            merges.entry((a, b)).or_insert((rank as u32, m));
            continue;
        }
        cat.clear();
        cat.extend_from_slice(pa);
        cat.extend_from_slice(pb);
        let Some(m) = piece_to_id.get(&cat[..]) else {
            return Err(TokenizerError::Invalid(format!(
                "merge {rank} ({} + {}) produces a token missing from the vocabulary",
                String::from_utf8_lossy(pa),
                String::from_utf8_lossy(pb)
            )));
        };
        merges.entry((a, b)).or_insert((rank as u32, m));
    }
    if t.merge_out.is_empty() {
        // Keep the computed results so that serialization can store them.
        let mut out = vec![0u32; t.merge_list.len()];
        for (rank, ab) in t.merge_list.iter().enumerate() {
            if let Some(&(r, m)) = merges.get(ab) {
                if r as usize == rank {
                    out[rank] = m;
                    continue;
                }
            }
            // Duplicate merge rule: never applied, but keep a consistent value.
            out[rank] = merges.get(ab).map(|x| x.1).unwrap_or(0);
        }
        t.merge_out = out;
    }
    t.d.piece_to_id = piece_to_id;
    t.d.reserved_to_id = PieceIndex::default();
    t.d.byte_to_id = byte_to_id;
    t.d.byte_value = Vec::new();
    t.d.decoded = decoded;
    t.d.merges = merges;
    t.d.specials = SpecialMatcher::new(specials);
    t.d.user_defined = SpecialMatcher::default();
    Ok(())
}

#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

/// Reusable buffers for merging.
#[derive(Default)]
pub(crate) struct Scratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Reverse<(u32, u32, u32, u32)>>,
    bytes: Vec<u8>,
}

/// Per-call cache: word bytes -> range of ids in `ids`.
#[derive(Default)]
pub(crate) struct WordCache {
    map: FxHashMap<Box<[u8]>, (u32, u32)>,
    ids: Vec<u32>,
}

const CACHE_MAX_WORD: usize = 48;

pub(crate) fn encode(
    t: &Tokenizer,
    pre: PreTokenizer,
    text: &str,
    scratch: &mut Scratch,
    mut cache: Option<&mut WordCache>,
    out: &mut Vec<u32>,
) {
    let ignore_merges = matches!(
        t.kind,
        ModelKind::ByteLevel {
            ignore_merges: true,
            ..
        }
    );
    pre.split(text, |word| {
        let w = word.as_bytes();
        if let Some(c) = cache.as_deref_mut() {
            if w.len() <= CACHE_MAX_WORD {
                if let Some(&(s, e)) = c.map.get(w) {
                    out.extend_from_slice(&c.ids[s as usize..e as usize]);
                    return;
                }
                let before = out.len();
                encode_word(t, w, ignore_merges, scratch, out);
                let s = c.ids.len() as u32;
                c.ids.extend_from_slice(&out[before..]);
                c.map.insert(w.into(), (s, c.ids.len() as u32));
                return;
            }
        }
        encode_word(t, w, ignore_merges, scratch, out);
    });
}

/// BPE over one pre-token's bytes.
fn encode_word(
    t: &Tokenizer,
    w: &[u8],
    ignore_merges: bool,
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) {
    let d = &t.d;
    if ignore_merges {
        // The whole word as one vocabulary entry, in byte-level form.
        let table = byte_level_table();
        scratch.bytes.clear();
        let mut buf = [0u8; 4];
        for &b in w {
            scratch
                .bytes
                .extend_from_slice(table[b as usize].encode_utf8(&mut buf).as_bytes());
        }
        if let Some(id) = d.piece_to_id.get(&scratch.bytes[..]) {
            out.push(id);
            return;
        }
    }
    let syms = &mut scratch.syms;
    syms.clear();
    for &b in w {
        let id = d.byte_to_id[b as usize];
        if id == NONE {
            continue; // bytes absent from the vocabulary are dropped
        }
        let k = syms.len() as u32;
        syms.push(Sym {
            id,
            prev: if k == 0 { NONE } else { k - 1 },
            next: k + 1,
        });
    }
    let Some(last) = syms.last_mut() else { return };
    last.next = NONE;
    if syms.len() == 1 {
        out.push(syms[0].id);
        return;
    }
    if syms.len() == 2 {
        match d.merges.get(&(syms[0].id, syms[1].id)) {
            Some(&(_, m)) => out.push(m),
            None => out.extend([syms[0].id, syms[1].id]),
        }
        return;
    }
    let heap = &mut scratch.heap;
    heap.clear();
    for i in 0..syms.len() - 1 {
        if let Some(&(rank, _)) = d.merges.get(&(syms[i].id, syms[i + 1].id)) {
            heap.push(Reverse((rank, i as u32, syms[i].id, syms[i + 1].id)));
        }
    }
    while let Some(Reverse((_, pos, lid, rid))) = heap.pop() {
        let p = pos as usize;
        let s = syms[p];
        if s.id != lid || s.next == NONE {
            continue;
        }
        let r = s.next as usize;
        if syms[r].id != rid {
            continue;
        }
        let Some(&(_, m)) = d.merges.get(&(lid, rid)) else {
            continue;
        };
        // Merge r into p.
        syms[p].id = m;
        let rn = syms[r].next;
        syms[p].next = rn;
        syms[r].id = NONE;
        if rn != NONE {
            syms[rn as usize].prev = pos;
            if let Some(&(rank, _)) = d.merges.get(&(m, syms[rn as usize].id)) {
                heap.push(Reverse((rank, pos, m, syms[rn as usize].id)));
            }
        }
        if s.prev != NONE {
            let pid = syms[s.prev as usize].id;
            if let Some(&(rank, _)) = d.merges.get(&(pid, m)) {
                heap.push(Reverse((rank, s.prev, pid, m)));
            }
        }
    }
    let mut i = 0u32;
    while i != NONE {
        out.push(syms[i as usize].id);
        i = syms[i as usize].next;
    }
}

fn byte_level_table() -> &'static [char; 256] {
    static TABLE: std::sync::OnceLock<[char; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(byte_to_char)
}

/// Encodes raw bytes into the byte-level string form (`" hi"` -> `"Ġhi"`).
pub fn bytes_to_byte_level(bytes: &[u8]) -> String {
    let table = byte_level_table();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

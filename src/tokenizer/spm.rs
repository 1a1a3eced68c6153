//! SentencePiece BPE encoding (score-driven merges, byte fallback), reproducing
//! `sentencepiece`'s `bpe_model.cc` semantics.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::index::{ByteTable, PieceIndex};
use super::specials::{SpecialEntry, SpecialMatcher};
use super::{SpmConfig, TokenType, Tokenizer, TokenizerError};

const SPACE: &[u8] = "\u{2581}".as_bytes();
const UNK_SURFACE: &[u8] = " \u{2047} ".as_bytes();

/// Parses `<0xNN>` into NN.
pub(crate) fn parse_byte_piece(p: &[u8]) -> Option<u8> {
    if p.len() == 6 && p.starts_with(b"<0x") && p[5] == b'>' {
        let s = std::str::from_utf8(&p[3..5]).ok()?;
        u8::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// Replaces every `▁` by a space.
pub(crate) fn unescape(p: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < p.len() {
        if p[i..].starts_with(SPACE) {
            out.push(b' ');
            i += SPACE.len();
        } else {
            out.push(p[i]);
            i += 1;
        }
    }
}

pub(crate) fn derive(t: &mut Tokenizer) -> Result<(), TokenizerError> {
    let n = t.pieces.len();
    let total = t.pieces.total_bytes();
    let mut piece_to_id = PieceIndex::with_capacity(n, total);
    let mut reserved = PieceIndex::with_capacity(16, 64);
    let mut byte_to_id = vec![u32::MAX; 256];
    let mut byte_value = vec![None; n];
    let mut decoded = ByteTable::with_capacity(n, total);
    let mut specials = Vec::new();
    let mut user = Vec::new();
    let mut buf = Vec::new();
    for (i, (p, ty)) in t.pieces.iter().zip(&t.types).enumerate() {
        let id = i as u32;
        match ty {
            TokenType::Normal | TokenType::UserDefined | TokenType::Unused => {
                piece_to_id.insert(p, id);
            }
            TokenType::Control | TokenType::Unknown | TokenType::Byte => {
                reserved.insert(p, id);
            }
        }
        match ty {
            TokenType::Control => decoded.push(&[]),
            TokenType::Unknown => decoded.push(UNK_SURFACE),
            TokenType::Byte if parse_byte_piece(p).is_some() => {
                let b = parse_byte_piece(p).unwrap_or(0);
                if byte_to_id[b as usize] == u32::MAX {
                    byte_to_id[b as usize] = id;
                }
                byte_value[i] = Some(b);
                decoded.push(&[b]);
            }
            _ => {
                unescape(p, &mut buf);
                decoded.push(&buf);
            }
        }
        match ty {
            TokenType::Control | TokenType::Unknown if !p.is_empty() => {
                specials.push(SpecialEntry {
                    text: p.into(),
                    id,
                    always: false,
                })
            }
            TokenType::UserDefined if !p.is_empty() => user.push(SpecialEntry {
                text: p.into(),
                id,
                always: true,
            }),
            _ => {}
        }
    }
    t.d.spm_space_splittable = !piece_to_id.keys().any(|p: &[u8]| {
        p.windows(SPACE.len())
            .enumerate()
            .any(|(k, w)| k > 0 && w == SPACE && !p[..k].ends_with(SPACE))
    });
    t.d.piece_to_id = piece_to_id;
    t.d.reserved_to_id = reserved;
    t.d.byte_to_id = byte_to_id;
    t.d.byte_value = byte_value;
    t.d.decoded = decoded;
    t.d.specials = SpecialMatcher::new(specials);
    t.d.user_defined = SpecialMatcher::new(user);
    Ok(())
}

/// (start, len) of a merged unused piece -> its two halves.
type RevMerge = FxHashMap<(u32, u32), ((u32, u32), (u32, u32))>;

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
    freeze: bool,
}

struct Pair {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Pair {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pair {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// Normalizes one text segment the way sentencepiece's identity normalizer does.
fn normalize(cfg: &SpmConfig, text: &str, dummy_prefix: bool, out: &mut Vec<u8>) {
    out.clear();
    let bytes = text.as_bytes();
    let mut s = bytes;
    if cfg.remove_extra_whitespaces {
        while let [b' ', rest @ ..] = s {
            s = rest;
        }
        while let [rest @ .., b' '] = s {
            s = rest;
        }
    }
    if s.is_empty() {
        return;
    }
    let space: &[u8] = if cfg.escape_whitespaces { SPACE } else { b" " };
    if cfg.add_dummy_prefix && dummy_prefix {
        out.extend_from_slice(space);
    }
    let mut prev_space = false;
    for &b in s {
        if b == b' ' {
            if cfg.remove_extra_whitespaces && prev_space {
                continue;
            }
            out.extend_from_slice(space);
            prev_space = true;
        } else {
            out.push(b);
            prev_space = false;
        }
    }
}

#[inline]
fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// Encodes one text segment (no special tokens inside) and appends the ids.
pub(crate) fn encode(
    t: &Tokenizer,
    cfg: &SpmConfig,
    text: &str,
    dummy_prefix: bool,
    out: &mut Vec<u32>,
) {
    let mut norm = Vec::with_capacity(text.len() + 8);
    normalize(cfg, text, dummy_prefix, &mut norm);
    if norm.is_empty() {
        return;
    }
    if !t.d.spm_space_splittable || norm.len() < 64 {
        encode_chunk(t, cfg, &norm, out);
        return;
    }
    // No vocabulary piece contains `▁` after another character, so no merge can
    // cross the start of a `▁` that follows a non-`▁` char: such chunks are
    // independent, which keeps heaps small and lets repeated words be cached.
    let use_cache = norm.len() > 256;
    let mut cache: FxHashMap<&[u8], (u32, u32)> = FxHashMap::default();
    let mut cache_ids: Vec<u32> = Vec::new();
    let mut start = 0;
    let mut i = 1;
    let n = norm.len();
    loop {
        let boundary = i >= n
            || (norm[i] == SPACE[0] && norm[i..].starts_with(SPACE) && !norm[..i].ends_with(SPACE));
        if boundary {
            let chunk = &norm[start..i.min(n)];
            if use_cache && chunk.len() <= 64 {
                if let Some(&(a, b)) = cache.get(chunk) {
                    out.extend_from_slice(&cache_ids[a as usize..b as usize]);
                } else {
                    let before = out.len();
                    encode_chunk(t, cfg, chunk, out);
                    let a = cache_ids.len() as u32;
                    cache_ids.extend_from_slice(&out[before..]);
                    cache.insert(chunk, (a, cache_ids.len() as u32));
                }
            } else {
                encode_chunk(t, cfg, chunk, out);
            }
            if i >= n {
                break;
            }
            start = i;
        }
        i += 1;
    }
}

/// BPE over one normalized chunk.
fn encode_chunk(t: &Tokenizer, cfg: &SpmConfig, norm: &[u8], out: &mut Vec<u32>) {
    let d = &t.d;
    // Split into characters (or user-defined pieces, which are frozen).
    let mut symbols: Vec<Symbol> = Vec::with_capacity(norm.len());
    let mut i = 0;
    while i < norm.len() {
        let (len, freeze) = match d.user_defined.match_at(norm, i, true) {
            Some((_, len)) => (len, true),
            None => (utf8_len(norm[i]).min(norm.len() - i), false),
        };
        let idx = symbols.len() as i32;
        symbols.push(Symbol {
            start: i as u32,
            len: len as u32,
            prev: idx - 1,
            next: if i + len < norm.len() { idx + 1 } else { -1 },
            freeze,
        });
        i += len;
    }

    let mut agenda: BinaryHeap<Pair> = BinaryHeap::with_capacity(symbols.len());
    let mut rev_merge: RevMerge = FxHashMap::default();

    let try_add = |symbols: &[Symbol],
                   agenda: &mut BinaryHeap<Pair>,
                   rev_merge: &mut RevMerge,
                   left: i32,
                   right: i32| {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        if l.freeze || r.freeze {
            return;
        }
        let start = l.start as usize;
        let size = (l.len + r.len) as usize;
        let piece = &norm[start..start + size];
        let Some(id) = d.piece_to_id.get(piece) else {
            return;
        };
        agenda.push(Pair {
            score: t.scores[id as usize],
            left: left as u32,
            right: right as u32,
            size: size as u32,
        });
        if t.types[id as usize] == TokenType::Unused {
            rev_merge.insert((l.start, size as u32), ((l.start, l.len), (r.start, r.len)));
        }
    };

    for i in 1..symbols.len() {
        try_add(
            &symbols,
            &mut agenda,
            &mut rev_merge,
            i as i32 - 1,
            i as i32,
        );
    }
    while let Some(top) = agenda.pop() {
        let (l, r) = (top.left as usize, top.right as usize);
        if symbols[l].len == 0 || symbols[r].len == 0 || symbols[l].len + symbols[r].len != top.size
        {
            continue;
        }
        symbols[l].len += symbols[r].len;
        let rn = symbols[r].next;
        symbols[l].next = rn;
        if rn >= 0 {
            symbols[rn as usize].prev = l as i32;
        }
        symbols[r].len = 0;
        let lp = symbols[l].prev;
        try_add(&symbols, &mut agenda, &mut rev_merge, lp, l as i32);
        try_add(&symbols, &mut agenda, &mut rev_merge, l as i32, rn);
    }

    let mut idx: i32 = if symbols.is_empty() { -1 } else { 0 };
    while idx >= 0 {
        let s = symbols[idx as usize];
        resegment(t, cfg, norm, &rev_merge, (s.start, s.len), out, 0);
        idx = s.next;
    }
}

fn piece_id(t: &Tokenizer, piece: &[u8]) -> Option<u32> {
    t.d.reserved_to_id
        .get(piece)
        .or_else(|| t.d.piece_to_id.get(piece))
}

fn resegment(
    t: &Tokenizer,
    cfg: &SpmConfig,
    norm: &[u8],
    rev_merge: &RevMerge,
    (start, len): (u32, u32),
    out: &mut Vec<u32>,
    depth: u32,
) {
    let piece = &norm[start as usize..(start + len) as usize];
    let id = piece_id(t, piece);
    if let Some(id) = id {
        if t.types[id as usize] == TokenType::Unused && depth < 64 {
            if let Some(&(a, b)) = rev_merge.get(&(start, len)) {
                resegment(t, cfg, norm, rev_merge, a, out, depth + 1);
                resegment(t, cfg, norm, rev_merge, b, out, depth + 1);
                return;
            }
        }
        if t.types[id as usize] != TokenType::Unknown {
            out.push(id);
            return;
        }
    }
    // Unknown piece.
    if cfg.byte_fallback {
        for &b in piece {
            match t.d.byte_to_id[b as usize] {
                u32::MAX => out.extend(t.unk),
                bid => out.push(bid),
            }
        }
    } else if let Some(unk) = t.unk {
        out.push(unk);
    }
}

//! Matching of added / special tokens written literally in the text
//! (leftmost, longest match), splitting the text around them.

/// One entry: the token text, its id, and whether it is matched even when
/// special-token parsing is off (user-defined / non-special added tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecialEntry {
    pub text: Box<[u8]>,
    pub id: u32,
    pub always: bool,
}

/// Added tokens bucketed by first byte, longest first inside a bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialMatcher {
    buckets: Vec<Vec<SpecialEntry>>,
    /// `first[b]`: some entry starts with byte b (any / always-matched).
    first_any: Vec<bool>,
    first_always: Vec<bool>,
    empty: bool,
}

pub(crate) enum Segment<'a> {
    Text(&'a str),
    Token(u32),
}

impl SpecialMatcher {
    pub fn new(entries: Vec<SpecialEntry>) -> SpecialMatcher {
        let mut buckets: Vec<Vec<SpecialEntry>> = vec![Vec::new(); 256];
        let mut first_any = vec![false; 256];
        let mut first_always = vec![false; 256];
        let mut empty = true;
        for e in entries {
            let Some(&b) = e.text.first() else { continue };
            if std::str::from_utf8(&e.text).is_err() {
                continue;
            }
            first_any[b as usize] = true;
            if e.always {
                first_always[b as usize] = true;
            }
            empty = false;
            buckets[b as usize].push(e);
        }
        for b in &mut buckets {
            b.sort_by(|x, y| y.text.len().cmp(&x.text.len()).then(x.id.cmp(&y.id)));
            b.dedup_by(|x, y| x.text == y.text);
        }
        SpecialMatcher {
            buckets,
            first_any,
            first_always,
            empty,
        }
    }

    /// Longest entry matching at `text[i..]` (entries that are not `always`
    /// only when `parse_special`). Returns (id, byte length).
    #[inline]
    pub fn match_at(&self, text: &[u8], i: usize, parse_special: bool) -> Option<(u32, usize)> {
        let b = *text.get(i)? as usize;
        let first = if parse_special {
            &self.first_any
        } else {
            &self.first_always
        };
        if self.empty || !first[b] {
            return None;
        }
        let rest = &text[i..];
        self.buckets[b]
            .iter()
            .find(|e| (parse_special || e.always) && rest.starts_with(&e.text))
            .map(|e| (e.id, e.text.len()))
    }

    /// Calls `f` with the text segments and matched tokens in order.
    pub fn split<'a>(&self, text: &'a str, parse_special: bool, mut f: impl FnMut(Segment<'a>)) {
        let bytes = text.as_bytes();
        if self.empty {
            if !text.is_empty() {
                f(Segment::Text(text));
            }
            return;
        }
        let first = if parse_special {
            &self.first_any
        } else {
            &self.first_always
        };
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if first[bytes[i] as usize] {
                if let Some((id, len)) = self.match_at(bytes, i, parse_special) {
                    if start < i {
                        // Entries start with a non-continuation byte (they are
                        // valid UTF-8), so `i` is a char boundary.
                        f(Segment::Text(&text[start..i]));
                    }
                    f(Segment::Token(id));
                    i += len;
                    start = i;
                    continue;
                }
            }
            i += 1;
        }
        if start < bytes.len() {
            f(Segment::Text(&text[start..]));
        }
    }
}

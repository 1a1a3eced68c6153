//! Decoding ids to text (batch and streaming), reproducing sentencepiece's and
//! Hugging Face's rules for leading spaces, control tokens and invalid UTF-8.

use super::{ModelKind, TokenType, Tokenizer};

const REPLACEMENT: &str = "\u{FFFD}";

/// Appends the valid UTF-8 prefix of `pending[..]` to `out`, replacing invalid
/// sequences by U+FFFD (one per byte with `per_byte`, sentencepiece style; one
/// per maximal invalid subpart otherwise, like `String::from_utf8_lossy`).
/// An incomplete sequence at the end is kept in `pending` unless `finish`.
fn drain_utf8(pending: &mut Vec<u8>, out: &mut String, per_byte: bool, finish: bool) {
    let mut pos = 0;
    while pos < pending.len() {
        match std::str::from_utf8(&pending[pos..]) {
            Ok(s) => {
                out.push_str(s);
                pos = pending.len();
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // The prefix up to `valid` is valid UTF-8 by definition.
                if let Ok(s) = std::str::from_utf8(&pending[pos..pos + valid]) {
                    out.push_str(s);
                }
                pos += valid;
                match e.error_len() {
                    Some(n) => {
                        let reps = if per_byte { n } else { 1 };
                        for _ in 0..reps {
                            out.push_str(REPLACEMENT);
                        }
                        pos += n;
                    }
                    None => {
                        if finish {
                            let n = pending.len() - pos;
                            let reps = if per_byte { n } else { 1 };
                            for _ in 0..reps {
                                out.push_str(REPLACEMENT);
                            }
                            pos = pending.len();
                        }
                        break;
                    }
                }
            }
        }
    }
    pending.drain(..pos);
}

/// Incremental decoding state shared by [`decode`] and [`StreamDecoder`].
#[derive(Debug, Clone)]
struct State {
    pending: Vec<u8>,
    at_start: bool,
}

impl State {
    fn new() -> Self {
        State {
            pending: Vec::new(),
            at_start: true,
        }
    }

    /// Feeds one id; appends completed text to `out`.
    fn push(&mut self, t: &Tokenizer, id: u32, skip_special: bool, out: &mut String) {
        let Some(&ty) = t.types.get(id as usize) else {
            return;
        };
        let dec = t.d.decoded.get(id as usize);
        match t.kind {
            ModelKind::Spm(_) => {
                if ty == TokenType::Control {
                    return; // invisible; does not end the "start of text" state
                }
                if ty == TokenType::Byte
                    && t.d.byte_value.get(id as usize).copied().flatten().is_some()
                {
                    self.pending.extend_from_slice(dec);
                    self.at_start = false;
                    drain_utf8(&mut self.pending, out, true, false);
                    return;
                }
                // A non-byte piece ends any run of byte pieces.
                drain_utf8(&mut self.pending, out, true, true);
                let mut s: &[u8] = dec;
                if self.at_start && ty != TokenType::Unknown {
                    if let [b' ', rest @ ..] = s {
                        s = rest;
                    }
                }
                self.at_start = false;
                self.pending.extend_from_slice(s);
                drain_utf8(&mut self.pending, out, true, false);
            }
            ModelKind::ByteLevel { .. } => {
                if skip_special && ty == TokenType::Control {
                    return;
                }
                self.pending.extend_from_slice(dec);
                drain_utf8(&mut self.pending, out, false, false);
            }
        }
    }

    fn finish(&mut self, t: &Tokenizer, out: &mut String) {
        let per_byte = matches!(t.kind, ModelKind::Spm(_));
        drain_utf8(&mut self.pending, out, per_byte, true);
    }
}

pub(crate) fn decode(t: &Tokenizer, ids: &[u32], skip_special: bool) -> String {
    if let ModelKind::ByteLevel { .. } = t.kind {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let Some(&ty) = t.types.get(id as usize) else {
                continue;
            };
            if skip_special && ty == TokenType::Control {
                continue;
            }
            bytes.extend_from_slice(t.d.decoded.get(id as usize));
        }
        return match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
    }
    let mut st = State::new();
    let mut out = String::with_capacity(ids.len() * 4);
    for &id in ids {
        st.push(t, id, skip_special, &mut out);
    }
    st.finish(t, &mut out);
    out
}

/// Streaming decoder: feed ids one at a time, get back only complete UTF-8
/// text (a character split across tokens is emitted once complete). The SPM
/// leading-space rule is applied to the first piece.
#[derive(Debug, Clone)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    state: State,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        StreamDecoder {
            tok,
            skip_special,
            state: State::new(),
        }
    }

    /// Feeds one id and returns the newly completed text (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let mut out = String::new();
        self.state.push(self.tok, id, self.skip_special, &mut out);
        out
    }

    /// Ends the stream: any incomplete trailing bytes become U+FFFD.
    pub fn flush(&mut self) -> String {
        let mut out = String::new();
        self.state.finish(self.tok, &mut out);
        out
    }

    /// Forgets all state (as if newly created).
    pub fn reset(&mut self) {
        self.state = State::new();
    }
}

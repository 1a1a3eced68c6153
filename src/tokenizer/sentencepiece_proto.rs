//! A minimal hand-written protobuf reader for sentencepiece `tokenizer.model`
//! (`ModelProto`): pieces, scores, types, and the trainer / normalizer flags
//! the encoder needs.

use super::index::ByteTable;
use super::{ModelKind, SpmConfig, TokenType, Tokenizer, TokenizerError};

fn err(offset: usize, msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Protobuf {
        offset,
        msg: msg.into(),
    }
}

/// A protobuf wire-format cursor over a message. `base` is the absolute
/// offset of `buf[0]` in the file, for error messages.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8], usize),
    Fixed32(u32),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    fn at(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self) -> Result<u64, TokenizerError> {
        let start = self.at();
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(err(start, "truncated varint"));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(err(start, "varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(err(start, "varint longer than 10 bytes"))
    }

    /// Next (field number, value), or None at the end of the message.
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, TokenizerError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key_at = self.at();
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        if field == 0 || key >> 3 > u64::from(u32::MAX >> 3) {
            return Err(err(key_at, format!("invalid field number in key {key}")));
        }
        let v = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                if self.buf.len() - self.pos < 8 {
                    return Err(err(self.at(), "truncated 64-bit field"));
                }
                self.pos += 8;
                Value::Fixed64
            }
            2 => {
                let len_at = self.at();
                let len = self.varint()?;
                let remaining = (self.buf.len() - self.pos) as u64;
                if len > remaining {
                    return Err(err(
                        len_at,
                        format!("length {len} exceeds the {remaining} remaining bytes"),
                    ));
                }
                let start = self.pos;
                self.pos += len as usize;
                Value::Bytes(&self.buf[start..self.pos], self.base + start)
            }
            5 => {
                let s = self
                    .buf
                    .get(self.pos..self.pos + 4)
                    .ok_or_else(|| err(self.at(), "truncated 32-bit field"))?;
                self.pos += 4;
                Value::Fixed32(u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
            }
            wt => {
                return Err(err(
                    key_at,
                    format!("unsupported wire type {wt} (field {field})"),
                ))
            }
        };
        Ok(Some((field, v)))
    }
}

fn as_varint(v: &Value, field: &str, at: usize) -> Result<u64, TokenizerError> {
    match v {
        Value::Varint(x) => Ok(*x),
        _ => Err(err(at, format!("field {field} should be a varint"))),
    }
}

/// The parsed contents of a sentencepiece model we care about.
#[derive(Debug, Default)]
pub(crate) struct SpModel {
    pub pieces: Vec<(Vec<u8>, f32, TokenType)>,
    pub model_type: i64,
    pub split_digits: bool,
    pub byte_fallback: bool,
    pub unk_id: i64,
    pub bos_id: i64,
    pub eos_id: i64,
    pub pad_id: i64,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
    pub treat_whitespace_as_suffix: bool,
    pub has_charsmap: bool,
    pub normalizer_name: String,
}

pub(crate) fn parse(bytes: &[u8]) -> Result<SpModel, TokenizerError> {
    let mut m = SpModel {
        model_type: 1,
        unk_id: 0,
        bos_id: 1,
        eos_id: 2,
        pad_id: -1,
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
        escape_whitespaces: true,
        ..Default::default()
    };
    let mut r = Reader::new(bytes, 0);
    let mut seen_trainer = false;
    while let Some((field, v)) = r.field()? {
        match (field, v) {
            (1, Value::Bytes(b, at)) => m.pieces.push(parse_piece(b, at)?),
            (2, Value::Bytes(b, at)) => {
                seen_trainer = true;
                parse_trainer(b, at, &mut m)?
            }
            (3, Value::Bytes(b, at)) => parse_normalizer(b, at, &mut m)?,
            (1..=3, _) => {
                return Err(err(r.at(), format!("field {field} should be a message")));
            }
            _ => {} // self-test data, denormalizer: ignored
        }
    }
    if m.pieces.is_empty() {
        return Err(err(
            bytes.len(),
            "no pieces found (not a sentencepiece model?)",
        ));
    }
    if !seen_trainer {
        // Older models always carry a trainer spec; keep defaults but the model
        // type is then unknown: assume unigram so we refuse it below.
        m.model_type = 1;
    }
    Ok(m)
}

fn parse_piece(buf: &[u8], base: usize) -> Result<(Vec<u8>, f32, TokenType), TokenizerError> {
    let mut r = Reader::new(buf, base);
    let mut piece = Vec::new();
    let mut score = 0.0f32;
    let mut ty = TokenType::Normal;
    while let Some((field, v)) = r.field()? {
        match (field, v) {
            (1, Value::Bytes(b, _)) => piece = b.to_vec(),
            (2, Value::Fixed32(x)) => score = f32::from_bits(x),
            (3, Value::Varint(x)) => ty = TokenType::from_i32(x as i32),
            (1..=3, _) => {
                return Err(err(
                    r.at(),
                    format!("piece field {field} has the wrong wire type"),
                ))
            }
            _ => {}
        }
    }
    Ok((piece, score, ty))
}

fn parse_trainer(buf: &[u8], base: usize, m: &mut SpModel) -> Result<(), TokenizerError> {
    let mut r = Reader::new(buf, base);
    loop {
        let at = r.at();
        let Some((field, v)) = r.field()? else { break };
        match field {
            3 => m.model_type = as_varint(&v, "trainer_spec.model_type", at)? as i64,
            24 => m.treat_whitespace_as_suffix = as_varint(&v, "treat_ws_as_suffix", at)? != 0,
            25 => m.split_digits = as_varint(&v, "split_digits", at)? != 0,
            35 => m.byte_fallback = as_varint(&v, "byte_fallback", at)? != 0,
            40 => m.unk_id = as_varint(&v, "unk_id", at)? as i32 as i64,
            41 => m.bos_id = as_varint(&v, "bos_id", at)? as i32 as i64,
            42 => m.eos_id = as_varint(&v, "eos_id", at)? as i32 as i64,
            43 => m.pad_id = as_varint(&v, "pad_id", at)? as i32 as i64,
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer(buf: &[u8], base: usize, m: &mut SpModel) -> Result<(), TokenizerError> {
    let mut r = Reader::new(buf, base);
    loop {
        let at = r.at();
        let Some((field, v)) = r.field()? else { break };
        match (field, &v) {
            (1, Value::Bytes(b, _)) => m.normalizer_name = String::from_utf8_lossy(b).into_owned(),
            (2, Value::Bytes(b, _)) => m.has_charsmap = !b.is_empty(),
            (3, _) => m.add_dummy_prefix = as_varint(&v, "add_dummy_prefix", at)? != 0,
            (4, _) => m.remove_extra_whitespaces = as_varint(&v, "remove_extra_ws", at)? != 0,
            (5, _) => m.escape_whitespaces = as_varint(&v, "escape_whitespaces", at)? != 0,
            _ => {}
        }
    }
    Ok(())
}

/// Parses a `tokenizer.model` and builds the tokenizer.
pub(crate) fn build(bytes: &[u8]) -> Result<Tokenizer, TokenizerError> {
    let m = parse(bytes)?;
    if m.model_type != 2 {
        let name = match m.model_type {
            1 => "unigram",
            3 => "word",
            4 => "char",
            _ => "unknown",
        };
        return Err(TokenizerError::Unsupported(format!(
            "sentencepiece model type {} ({name}); only BPE is supported",
            m.model_type
        )));
    }
    if m.has_charsmap {
        return Err(TokenizerError::Unsupported(format!(
            "sentencepiece normalizer '{}' with a precompiled charsmap (only identity is supported)",
            m.normalizer_name
        )));
    }
    if m.treat_whitespace_as_suffix {
        return Err(TokenizerError::Unsupported(
            "sentencepiece treat_whitespace_as_suffix".into(),
        ));
    }
    let n = m.pieces.len() as i64;
    let id = |x: i64| (x >= 0 && x < n).then_some(x as u32);
    let mut pieces = ByteTable::with_capacity(m.pieces.len(), 0);
    let mut scores = Vec::with_capacity(m.pieces.len());
    let mut types = Vec::with_capacity(m.pieces.len());
    for (p, s, t) in m.pieces {
        pieces.push(&p);
        scores.push(s);
        types.push(t);
    }
    let unk = id(m.unk_id).or_else(|| {
        types
            .iter()
            .position(|t| *t == TokenType::Unknown)
            .map(|i| i as u32)
    });
    let tok = Tokenizer {
        kind: ModelKind::Spm(SpmConfig {
            add_dummy_prefix: m.add_dummy_prefix,
            remove_extra_whitespaces: m.remove_extra_whitespaces,
            escape_whitespaces: m.escape_whitespaces,
            split_digits: m.split_digits,
            byte_fallback: m.byte_fallback,
        }),
        pieces,
        scores,
        types,
        merge_list: Vec::new(),
        merge_out: Vec::new(),
        bos: id(m.bos_id),
        eos: id(m.eos_id),
        unk,
        pad: id(m.pad_id),
        eog: Vec::new(),
        add_bos: true,
        add_eos: false,
        d: Default::default(),
    };
    tok.finish()
}

//! Typed metadata values and their byte encoding.

use std::ops::Range;

/// A metadata value. Large byte blobs read from a file are not copied: they are kept as a
/// byte range of the mapped file ([`Value::BytesAt`]) and resolved with `LlqFile::bytes`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Bytes(Vec<u8>),
    ArrU32(Vec<u32>),
    ArrF32(Vec<f32>),
    ArrStr(Vec<String>),
    /// Only produced by the reader: a byte blob at this range of the file.
    BytesAt(Range<usize>),
}

/// Type tags as stored in the file.
pub(crate) mod tag {
    pub const U32: u32 = 0;
    pub const I32: u32 = 1;
    pub const U64: u32 = 2;
    pub const F32: u32 = 3;
    pub const F64: u32 = 4;
    pub const BOOL: u32 = 5;
    pub const STR: u32 = 6;
    pub const BYTES: u32 = 7;
    pub const ARR_U32: u32 = 8;
    pub const ARR_F32: u32 = 9;
    pub const ARR_STR: u32 = 10;
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Bytes(_) | Value::BytesAt(_) => "bytes",
            Value::ArrU32(_) => "u32[]",
            Value::ArrF32(_) => "f32[]",
            Value::ArrStr(_) => "string[]",
        }
    }

    /// Integer value of any integer type, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I32(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        fn put_len(out: &mut Vec<u8>, n: usize) {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        match self {
            Value::U32(v) => {
                out.extend_from_slice(&tag::U32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::I32(v) => {
                out.extend_from_slice(&tag::I32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::U64(v) => {
                out.extend_from_slice(&tag::U64.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::F32(v) => {
                out.extend_from_slice(&tag::F32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::F64(v) => {
                out.extend_from_slice(&tag::F64.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Bool(v) => {
                out.extend_from_slice(&tag::BOOL.to_le_bytes());
                out.push(*v as u8);
            }
            Value::Str(s) => {
                out.extend_from_slice(&tag::STR.to_le_bytes());
                put_len(out, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                out.extend_from_slice(&tag::BYTES.to_le_bytes());
                put_len(out, b.len());
                out.extend_from_slice(b);
            }
            Value::ArrU32(a) => {
                out.extend_from_slice(&tag::ARR_U32.to_le_bytes());
                put_len(out, a.len());
                a.iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
            Value::ArrF32(a) => {
                out.extend_from_slice(&tag::ARR_F32.to_le_bytes());
                put_len(out, a.len());
                a.iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
            Value::ArrStr(a) => {
                out.extend_from_slice(&tag::ARR_STR.to_le_bytes());
                put_len(out, a.len());
                for s in a {
                    put_len(out, s.len());
                    out.extend_from_slice(s.as_bytes());
                }
            }
            Value::BytesAt(_) => panic!("BytesAt is a reader-side value and cannot be written"),
        }
    }
}

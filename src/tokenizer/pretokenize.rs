//! Hand-written pre-tokenizers reproducing the GPT-2, SmolLM and Llama 3
//! (and Qwen2) split regexes with leftmost-first alternation semantics.
//!
//! * GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! * SmolLM: every `\p{N}` char isolated first, then GPT-2 on the rest.
//! * Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//!   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//! * Qwen2: as Llama 3 but `\p{N}` (one digit per piece).

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// The pre-tokenizer family of a byte-level BPE tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreTokenizer {
    Gpt2,
    SmolLm,
    Llama3,
    Qwen2,
}

impl PreTokenizer {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            PreTokenizer::Gpt2 => 0,
            PreTokenizer::SmolLm => 1,
            PreTokenizer::Llama3 => 2,
            PreTokenizer::Qwen2 => 3,
        }
    }
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => PreTokenizer::Gpt2,
            1 => PreTokenizer::SmolLm,
            2 => PreTokenizer::Llama3,
            3 => PreTokenizer::Qwen2,
            _ => return None,
        })
    }

    /// Maps a GGUF `tokenizer.ggml.pre` name.
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        Some(match name {
            "smollm" => PreTokenizer::SmolLm,
            "gpt-2" | "gpt2" | "default" => PreTokenizer::Gpt2,
            "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "dbrx" => PreTokenizer::Llama3,
            "qwen2" | "deepseek-r1-qwen" => PreTokenizer::Qwen2,
            _ => return None,
        })
    }

    /// Splits `text` into pre-tokens, calling `f` for each (non-empty) piece.
    pub fn split<'a>(self, text: &'a str, mut f: impl FnMut(&'a str)) {
        match self {
            PreTokenizer::Gpt2 => split_with(text, gpt2_next, &mut f),
            PreTokenizer::Llama3 => split_with(text, |s, i| llama3_next(s, i, 3), &mut f),
            PreTokenizer::Qwen2 => split_with(text, |s, i| llama3_next(s, i, 1), &mut f),
            PreTokenizer::SmolLm => {
                let mut start = 0;
                for (i, c) in text.char_indices() {
                    if class(c) == Class::Number {
                        if start < i {
                            split_with(&text[start..i], gpt2_next, &mut f);
                        }
                        let end = i + c.len_utf8();
                        f(&text[i..end]);
                        start = end;
                    }
                }
                if start < text.len() {
                    split_with(&text[start..], gpt2_next, &mut f);
                }
            }
        }
    }

    /// Convenience: the pre-tokens as a vector.
    pub fn split_to_vec(self, text: &str) -> Vec<&str> {
        let mut v = Vec::new();
        self.split(text, |p| v.push(p));
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Letter,
    Number,
    Space,
    Other,
}

static ASCII_CLASS: [Class; 128] = {
    let mut t = [Class::Other; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphabetic() {
            Class::Letter
        } else if c.is_ascii_digit() {
            Class::Number
        } else if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            Class::Space
        } else {
            Class::Other
        };
        i += 1;
    }
    t
};

#[inline]
pub(crate) fn class(c: char) -> Class {
    if (c as u32) < 128 {
        return ASCII_CLASS[c as usize];
    }
    if c.is_whitespace() {
        return Class::Space;
    }
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Class::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// The char starting at byte `i` (must be a char boundary) and its length.
#[inline]
fn char_at(s: &str, i: usize) -> Option<(char, usize)> {
    let b = *s.as_bytes().get(i)?;
    if b < 128 {
        return Some((b as char, 1));
    }
    let c = s[i..].chars().next()?;
    Some((c, c.len_utf8()))
}

/// End of the run of chars of class `cls` starting at `i`.
#[inline]
fn run(s: &str, mut i: usize, cls: Class) -> usize {
    while let Some((c, l)) = char_at(s, i) {
        if class(c) != cls {
            break;
        }
        i += l;
    }
    i
}

/// Start of the char that ends at byte `j`.
#[inline]
fn prev_char_start(s: &str, j: usize) -> usize {
    let b = s.as_bytes();
    let mut k = j - 1;
    while k > 0 && (b[k] & 0xc0) == 0x80 {
        k -= 1;
    }
    k
}

/// Length of a contraction (`s`, `t`, `re`, `ve`, `m`, `ll`, `d`) after an apostrophe.
#[inline]
fn contraction(b: &[u8], i: usize, ci: bool) -> Option<usize> {
    let lower = |k: usize| {
        b.get(i + k)
            .map(|&x| if ci { x.to_ascii_lowercase() } else { x })
    };
    match lower(0)? {
        b's' | b't' | b'm' | b'd' => Some(1),
        b'r' | b'v' if lower(1) == Some(b'e') => Some(2),
        b'l' if lower(1) == Some(b'l') => Some(2),
        _ => None,
    }
}

fn split_with<'a>(text: &'a str, next: impl Fn(&str, usize) -> usize, f: &mut impl FnMut(&'a str)) {
    let mut i = 0;
    while i < text.len() {
        let j = next(text, i);
        debug_assert!(j > i);
        let j = j.max(i + 1);
        f(&text[i..j]);
        i = j;
    }
}

/// Whitespace alternatives `\s+(?!\S)|\s+` at `i` (a whitespace char).
#[inline]
fn trailing_space(s: &str, i: usize) -> usize {
    let j = run(s, i, Class::Space);
    if j == s.len() {
        return j;
    }
    let last = prev_char_start(s, j);
    if last > i {
        last
    } else {
        j
    }
}

fn gpt2_next(s: &str, i: usize) -> usize {
    let b = s.as_bytes();
    let Some((c, l)) = char_at(s, i) else {
        return s.len();
    };
    if c == '\'' {
        if let Some(n) = contraction(b, i + 1, false) {
            return i + 1 + n;
        }
    }
    let (body, cls) = if c == ' ' {
        match char_at(s, i + 1) {
            Some((c2, _)) if class(c2) != Class::Space => (i + 1, class(c2)),
            _ => (i, Class::Space),
        }
    } else {
        (i, class(c))
    };
    if cls != Class::Space {
        return run(s, body, cls);
    }
    let _ = l;
    trailing_space(s, i)
}

fn llama3_next(s: &str, i: usize, max_digits: usize) -> usize {
    let b = s.as_bytes();
    let Some((c, l)) = char_at(s, i) else {
        return s.len();
    };
    if c == '\'' {
        if let Some(n) = contraction(b, i + 1, true) {
            return i + 1 + n;
        }
    }
    let cls = class(c);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if cls == Class::Letter {
        return run(s, i, Class::Letter);
    }
    if cls != Class::Number && c != '\r' && c != '\n' {
        if let Some((c2, _)) = char_at(s, i + l) {
            if class(c2) == Class::Letter {
                return run(s, i + l, Class::Letter);
            }
        }
    }
    // \p{N}{1,N}
    if cls == Class::Number {
        let mut j = i;
        for _ in 0..max_digits {
            match char_at(s, j) {
                Some((c2, l2)) if class(c2) == Class::Number => j += l2,
                _ => break,
            }
        }
        return j;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let body = if c == ' ' {
        match char_at(s, i + 1) {
            Some((c2, _)) if class(c2) == Class::Other => Some(i + 1),
            _ => None,
        }
    } else if cls == Class::Other {
        Some(i)
    } else {
        None
    };
    if let Some(bs) = body {
        let mut j = run(s, bs, Class::Other);
        while j < b.len() && (b[j] == b'\r' || b[j] == b'\n') {
            j += 1;
        }
        return j;
    }
    // c is whitespace. `\s*[\r\n]+`: up to and including the last newline of the run.
    let j = run(s, i, Class::Space);
    if let Some(p) = b[i..j].iter().rposition(|&x| x == b'\r' || x == b'\n') {
        return i + p + 1;
    }
    trailing_space(s, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_basic() {
        let p = PreTokenizer::Gpt2;
        assert_eq!(p.split_to_vec("Hello world"), ["Hello", " world"]);
        assert_eq!(
            p.split_to_vec("I'm  here\n\n x"),
            ["I", "'m", " ", " here", "\n\n", " x"]
        );
        assert_eq!(p.split_to_vec("a   "), ["a", "   "]);
        assert_eq!(p.split_to_vec("x 123!?"), ["x", " 123", "!?"]);
    }

    #[test]
    fn llama3_hand_checked() {
        let p = PreTokenizer::Llama3;
        assert_eq!(p.split_to_vec("Hello world"), ["Hello", " world"]);
        assert_eq!(p.split_to_vec("12345"), ["123", "45"]);
        assert_eq!(p.split_to_vec("I'M here"), ["I", "'M", " here"]);
        assert_eq!(p.split_to_vec("(hello)"), ["(hello", ")"]);
        assert_eq!(p.split_to_vec("a  \n\n  b"), ["a", "  \n\n", " ", " b"]);
        assert_eq!(p.split_to_vec("x ...\n\ny"), ["x", " ...\n\n", "y"]);
        assert_eq!(p.split_to_vec("\tfoo"), ["\tfoo"]);
        assert_eq!(p.split_to_vec("1 2"), ["1", " ", "2"]);
        assert_eq!(p.split_to_vec("end   "), ["end", "   "]);
        assert_eq!(PreTokenizer::Qwen2.split_to_vec("123"), ["1", "2", "3"]);
    }

    #[test]
    fn smollm_digits() {
        let p = PreTokenizer::SmolLm;
        assert_eq!(p.split_to_vec("  12  "), ["  ", "1", "2", "  "]);
        assert_eq!(p.split_to_vec("ab12c"), ["ab", "1", "2", "c"]);
    }
}

//! Loading a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`).

use serde_json::Value;

use super::spm::parse_byte_piece;
use super::{ModelKind, PreTokenizer, SpmConfig, TokenType, Tokenizer, TokenizerError};

fn invalid(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid(msg.into())
}

/// The pre-tokenizers of a (possibly nested) `Sequence`, flattened.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v.get("type").and_then(Value::as_str) {
        Some("Sequence") => {
            for key in ["pretokenizers", "normalizers", "decoders"] {
                if let Some(items) = v.get(key).and_then(Value::as_array) {
                    for it in items {
                        flatten(it, out);
                    }
                }
            }
        }
        Some(_) => out.push(v),
        None => {}
    }
}

fn ty(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Detects the byte-level pre-tokenizer family.
pub(crate) fn detect_pre(pre: &Value) -> Result<PreTokenizer, TokenizerError> {
    let mut items = Vec::new();
    flatten(pre, &mut items);
    let mut digits = false;
    let mut byte_level_regex = false;
    let mut split_pattern: Option<&str> = None;
    for it in &items {
        match ty(it) {
            "Digits" => {
                digits |= it
                    .get("individual_digits")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            }
            "ByteLevel" => {
                byte_level_regex |= it.get("use_regex").and_then(Value::as_bool).unwrap_or(true)
            }
            "Split" => {
                split_pattern = it
                    .get("pattern")
                    .and_then(|p| p.get("Regex").or_else(|| p.get("String")))
                    .and_then(Value::as_str)
            }
            other => {
                return Err(TokenizerError::Unsupported(format!(
                    "pre-tokenizer type '{other}' in a byte-level tokenizer"
                )))
            }
        }
    }
    if let Some(p) = split_pattern {
        if p.contains(r"\p{N}{1,3}") {
            return Ok(PreTokenizer::Llama3);
        }
        if p.contains(r"\p{L}+|\p{N}|") {
            return Ok(PreTokenizer::Qwen2);
        }
        return Err(TokenizerError::Unsupported(format!(
            "Split pre-tokenizer pattern {p:?}"
        )));
    }
    if byte_level_regex {
        return Ok(if digits {
            PreTokenizer::SmolLm
        } else {
            PreTokenizer::Gpt2
        });
    }
    Err(TokenizerError::Unsupported(
        "byte-level tokenizer without a recognised pre-tokenizer (expected ByteLevel regex or a Split pattern)"
            .into(),
    ))
}

/// A token name from tokenizer_config (`"<s>"` or `{"content": "<s>", ...}`).
fn token_name(v: Option<&Value>) -> Option<&str> {
    let v = v?;
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

fn post_processor_adds_special(v: &Value) -> bool {
    let Some(single) = v.get("single").and_then(Value::as_array) else {
        return v
            .get("processors")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(post_processor_adds_special));
    };
    single
        .first()
        .is_some_and(|x| x.get("SpecialToken").is_some())
}

pub(crate) fn build(json: &[u8], config: Option<&[u8]>) -> Result<Tokenizer, TokenizerError> {
    let v: Value = serde_json::from_slice(json).map_err(|e| TokenizerError::Json(e.to_string()))?;
    let cfg: Option<Value> = match config {
        Some(c) => Some(
            serde_json::from_slice(c)
                .map_err(|e| TokenizerError::Json(format!("tokenizer_config.json: {e}")))?,
        ),
        None => None,
    };
    let model = v
        .get("model")
        .ok_or_else(|| invalid("tokenizer.json has no \"model\""))?;
    let mtype = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
    if mtype != "BPE" {
        return Err(TokenizerError::Unsupported(format!(
            "model type '{mtype}' (only BPE)"
        )));
    }
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("model.vocab is missing or not an object"))?;
    let limit = json.len() as u64; // every id needs some bytes of JSON
    let mut entries: Vec<(u32, &str, Option<bool>)> = Vec::with_capacity(vocab.len());
    for (k, id) in vocab {
        let id = id
            .as_u64()
            .filter(|&i| i < limit)
            .ok_or_else(|| invalid(format!("vocab id of {k:?} is not a valid integer")))?;
        entries.push((id as u32, k.as_str(), None));
    }
    let empty = Vec::new();
    let added = v
        .get("added_tokens")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for a in added {
        let id = a
            .get("id")
            .and_then(Value::as_u64)
            .filter(|&i| i < limit)
            .ok_or_else(|| invalid("added token without a valid id"))?;
        let content = a
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("added token {id} has no content")))?;
        let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
        entries.push((id as u32, content, Some(special)));
    }
    let n = entries.iter().map(|e| e.0 as usize + 1).max().unwrap_or(0);
    if n == 0 {
        return Err(invalid("empty vocabulary"));
    }
    let byte_fallback = model
        .get("byte_fallback")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let null = Value::Null;
    let pre = v.get("pre_tokenizer").unwrap_or(&null);
    let norm = v.get("normalizer").unwrap_or(&null);
    let mut pre_items = Vec::new();
    flatten(pre, &mut pre_items);
    let mut norm_items = Vec::new();
    flatten(norm, &mut norm_items);
    let metaspace = pre_items.iter().find(|p| ty(p) == "Metaspace");
    let spm_style = byte_fallback
        || metaspace.is_some()
        || norm_items.iter().any(|n| {
            ty(n) == "Prepend" || (ty(n) == "Replace" && n.to_string().contains('\u{2581}'))
        });

    let unk_name = model.get("unk_token").and_then(Value::as_str);
    let mut pieces: Vec<Box<[u8]>> = vec![Box::default(); n];
    let mut types = vec![TokenType::Unused; n];
    let mut scores = vec![0f32; n];
    for &(id, content, special) in &entries {
        let i = id as usize;
        pieces[i] = content.as_bytes().into();
        types[i] = match special {
            Some(true) => TokenType::Control,
            Some(false) => {
                if types[i] == TokenType::Unused {
                    TokenType::UserDefined
                } else {
                    types[i] // also in the model vocab: keep its type
                }
            }
            None if Some(content) == unk_name => TokenType::Unknown,
            None if spm_style
                && byte_fallback
                && parse_byte_piece(content.as_bytes()).is_some() =>
            {
                TokenType::Byte
            }
            None => TokenType::Normal,
        };
        if special.is_none() {
            scores[i] = -(id as f32);
        }
    }
    if let Some(u) = unk_name {
        if let Some(&(id, _, _)) = entries.iter().find(|e| e.1 == u) {
            if types[id as usize] != TokenType::Control {
                types[id as usize] = TokenType::Unknown;
            }
        }
    }

    let id_of =
        |name: &str| -> Option<u32> { entries.iter().rev().find(|e| e.1 == name).map(|e| e.0) };
    let cfgv = cfg.as_ref();
    let get_cfg = |k: &str| cfgv.and_then(|c| c.get(k));
    let bos = token_name(get_cfg("bos_token")).and_then(id_of);
    let eos = token_name(get_cfg("eos_token")).and_then(id_of);
    let unk = token_name(get_cfg("unk_token"))
        .or(unk_name)
        .and_then(id_of);
    let pad = token_name(get_cfg("pad_token")).and_then(id_of);
    let add_bos = get_cfg("add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or_else(|| {
            v.get("post_processor")
                .is_some_and(post_processor_adds_special)
        });
    let add_eos = get_cfg("add_eos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut merge_list = Vec::new();
    // Merge rules as (left id, right id), in rank order.
    let mut map = rustc_hash::FxHashMap::default();
    for &(id, content, special) in &entries {
        if special.is_none() {
            map.insert(content, id);
        }
    }
    let no_merges = Vec::new();
    let merges = match model.get("merges") {
        Some(Value::Array(m)) => m,
        None | Some(Value::Null) if spm_style => &no_merges,
        _ => return Err(invalid("model.merges is missing or not an array")),
    };
    let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let (a, b) = match m {
            Value::String(s) => s
                .split_once(' ')
                .ok_or_else(|| invalid(format!("merge {i} {s:?} has no space")))?,
            Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(invalid(format!("merge {i} is not a pair of strings"))),
            },
            _ => return Err(invalid(format!("merge {i} is neither \"a b\" nor [a, b]"))),
        };
        let (Some(&ia), Some(&ib)) = (map.get(a), map.get(b)) else {
            return Err(invalid(format!(
                "merge {i} ({a:?}, {b:?}) uses a token missing from the vocabulary"
            )));
        };
        pairs.push((ia, ib));
    }

    let kind = if spm_style {
        let add_dummy_prefix = match metaspace {
            Some(m) => match m.get("prepend_scheme").and_then(Value::as_str) {
                Some(s) => s != "never",
                None => m
                    .get("add_prefix_space")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            },
            None => norm_items.iter().any(|n| ty(n) == "Prepend"),
        };
        if !pairs.is_empty() {
            // sentencepiece merges by piece score; tokenizer.json has none, but a
            // converted merge list is ordered by the merged piece's score: the
            // best rank producing a piece becomes its score. Pieces that no rule
            // produces rank after all of them (by id).
            let n_rules = pairs.len();
            for &(id, _, special) in &entries {
                if special.is_none() {
                    scores[id as usize] = -((n_rules + id as usize) as f32);
                }
            }
            let mut cat = Vec::new();
            for (rank, &(a, b)) in pairs.iter().enumerate() {
                cat.clear();
                cat.extend_from_slice(&pieces[a as usize]);
                cat.extend_from_slice(&pieces[b as usize]);
                if let Some(&m) = std::str::from_utf8(&cat).ok().and_then(|c| map.get(c)) {
                    let s = &mut scores[m as usize];
                    *s = s.max(-(rank as f32));
                }
            }
        }
        ModelKind::Spm(SpmConfig {
            add_dummy_prefix,
            remove_extra_whitespaces: false,
            escape_whitespaces: true,
            split_digits: pre_items.iter().any(|p| ty(p) == "Digits"),
            byte_fallback,
        })
    } else {
        let pre = detect_pre(pre)?;
        let mut nfc = false;
        for n in &norm_items {
            match ty(n) {
                "NFC" => nfc = true,
                other => {
                    return Err(TokenizerError::Unsupported(format!(
                        "normalizer '{other}' in a byte-level tokenizer (only NFC is supported)"
                    )))
                }
            }
        }
        merge_list = pairs;
        ModelKind::ByteLevel {
            pre,
            ignore_merges: model
                .get("ignore_merges")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            nfc,
        }
    };
    let tok = Tokenizer {
        kind,
        pieces: pieces.into_iter().collect(),
        scores,
        types,
        merge_list,
        merge_out: Vec::new(),
        bos,
        eos,
        unk,
        pad,
        eog: Vec::new(),
        add_bos,
        add_eos,
        d: Default::default(),
    };
    tok.finish()
}

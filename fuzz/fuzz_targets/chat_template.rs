//! Chat templates: fuzzed template source and messages, rendered with the library's
//! fuel and output cap (libFuzzer's -timeout and -rss_limit_mb catch what escapes them).
//! Input: flags byte, then `template` SEP `messages`, where messages are a JSON list of
//! {role, content} or else lines alternating user/assistant. Flag bit 0 instead feeds
//! the whole input to `from_tokenizer_config` as a tokenizer_config.json.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llq::chat::{ChatMessage, ChatTemplate};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let parts = llq_fuzz::split(rest, 2);
    let template = if flags & 1 != 0 {
        match ChatTemplate::from_tokenizer_config(rest) {
            Ok(Some(t)) => t,
            _ => return,
        }
    } else {
        match ChatTemplate::new(&String::from_utf8_lossy(parts[0])) {
            Ok(t) => t,
            Err(_) => return,
        }
    };
    let raw = parts.get(1).copied().unwrap_or_default();
    let messages: Vec<ChatMessage> = match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Array(list)) => list
            .iter()
            .map(|m| {
                let s = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                ChatMessage::new(s("role"), s("content"))
            })
            .collect(),
        _ => String::from_utf8_lossy(raw)
            .lines()
            .enumerate()
            .map(|(i, l)| ChatMessage::new(["user", "assistant"][i % 2], l))
            .collect(),
    };
    if let Ok(out) = template.render(&messages, flags & 2 != 0, "<s>", "</s>") {
        assert!(out.len() <= 16 << 20, "rendered output past the cap");
    }
});

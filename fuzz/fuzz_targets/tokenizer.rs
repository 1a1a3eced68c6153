//! Every tokenizer loader on fuzzed bytes, then encode and decode of fuzzed text; and
//! the two real fixture tokenizers on fuzzed text.
//! Input: selector byte, then `tokenizer bytes` SEP `text` [SEP tokenizer_config.json].
#![no_main]

use libfuzzer_sys::fuzz_target;
use llq::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let parts = llq_fuzz::split(rest, 3);
    let text = String::from_utf8_lossy(parts.get(1).copied().unwrap_or_default());
    let loaded = match sel % 5 {
        0 => Tokenizer::from_hf_json(parts[0], parts.get(2).copied()),
        1 => Tokenizer::from_sentencepiece_model(parts[0]),
        2 => Tokenizer::from_bytes(parts[0]),
        // The real tokenizers: the whole rest is the text.
        n => {
            let tok = &llq_fuzz::fixture_tokenizers()[n as usize - 3];
            llq_fuzz::exercise_tokenizer(tok, &String::from_utf8_lossy(rest));
            return;
        }
    };
    let Ok(tok) = loaded else {
        return;
    };
    llq_fuzz::exercise_tokenizer(&tok, &text);
    // The compact form is what `.llq` stores: it must load back as the same tokenizer.
    let again = Tokenizer::from_bytes(&tok.to_bytes()).expect("compact form round-trips");
    assert_eq!(again.vocab_size(), tok.vocab_size());
    assert_eq!(again.encode(&text, true), tok.encode(&text, true));
});

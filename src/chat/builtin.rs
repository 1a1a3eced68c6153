//! Built-in chat templates, by the names llama.cpp's `--chat-template` uses, for models
//! whose file has no template (or a wrong one). They are Jinja like a model's own and go
//! through the same bounded renderer ([`super::ChatTemplate`]).
//!
//! llq encodes a rendered conversation without adding BOS (a model's template writes it),
//! so these write `bos_token` where llama.cpp's tokenizer would add it; otherwise the text
//! is llama.cpp's (`llm_chat_apply_template`), except that `zephyr` ends turns with the
//! model's `eos_token` as Hugging Face's zephyr template does.

/// `(name, Jinja source)`, in the order `--help` lists them.
pub const BUILTIN: &[(&str, &str)] = &[
    ("chatml", CHATML),
    ("llama2", LLAMA2),
    ("llama2-sys", LLAMA2_SYS),
    ("llama3", LLAMA3),
    ("gemma", GEMMA),
    ("zephyr", ZEPHYR),
    ("phi3", PHI3),
    ("vicuna", VICUNA),
];

/// The source of the built-in template `name`.
pub fn source(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The built-in names, comma-separated (for messages and `--help`).
pub fn names() -> String {
    BUILTIN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

// Text is written as Jinja string expressions ('\n' escapes) rather than template text,
// so that trim_blocks/lstrip_blocks cannot eat a newline that belongs to the format.

/// `<|im_start|>role\ncontent<|im_end|>\n` (SmolLM, Qwen, OpenHermes); no BOS.
const CHATML: &str = "{% for m in messages %}\
{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// `<s>[INST] user [/INST]answer</s>[INST] …`; a system message is the first line of
/// the first instruction, without `<<SYS>>` (llama.cpp's `llama2`, Mistral v0.1/v0.2).
const LLAMA2: &str = "{{ bos_token + '[INST] ' }}\
{% for m in messages %}\
{% if m.role == 'system' %}{{ m.content + '\\n' }}\
{% elif m.role == 'user' %}{{ m.content + ' [/INST]' }}\
{% else %}{{ m.content + eos_token }}{% if not loop.last %}{{ '[INST] ' }}{% endif %}\
{% endif %}\
{% endfor %}";

/// As `llama2`, with the system message in `<<SYS>>` tags (Llama 2 chat).
const LLAMA2_SYS: &str = "{{ bos_token + '[INST] ' }}\
{% for m in messages %}\
{% if m.role == 'system' %}{{ '<<SYS>>\\n' + m.content + '\\n<</SYS>>\\n\\n' }}\
{% elif m.role == 'user' %}{{ m.content + ' [/INST]' }}\
{% else %}{{ m.content + eos_token }}{% if not loop.last %}{{ '[INST] ' }}{% endif %}\
{% endif %}\
{% endfor %}";

/// Llama 3 headers, contents trimmed.
const LLAMA3: &str = "{{ bos_token }}\
{% for m in messages %}\
{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + (m.content | trim) + '<|eot_id|>' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/// Gemma turns (`assistant` is `model`); Gemma has no system role, so a system message
/// opens the next user turn, as llama.cpp does.
const GEMMA: &str = "{{ bos_token }}\
{% set ns = namespace(system='') %}\
{% for m in messages %}\
{% if m.role == 'system' %}{% set ns.system = ns.system + (m.content | trim) %}\
{% else %}\
{% set role = 'model' if m.role == 'assistant' else m.role %}\
{{ '<start_of_turn>' + role + '\\n' }}\
{% if ns.system and role != 'model' %}{{ ns.system + '\\n\\n' }}{% set ns.system = '' %}{% endif %}\
{{ (m.content | trim) + '<end_of_turn>\\n' }}\
{% endif %}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/// `<|role|>\ncontent</s>\n` (Zephyr, TinyLlama-Chat).
const ZEPHYR: &str = "{{ bos_token }}\
{% for m in messages %}\
{{ '<|' + m.role + '|>\\n' + m.content + eos_token + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/// `<|role|>\ncontent<|end|>\n` (Phi-3).
const PHI3: &str = "{{ bos_token }}\
{% for m in messages %}\
{{ '<|' + m.role + '|>\\n' + m.content + '<|end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/// `USER: …\nASSISTANT: …</s>\n`, a system message as a paragraph before (Vicuna 1.1).
const VICUNA: &str = "{{ bos_token }}\
{% for m in messages %}\
{% if m.role == 'system' %}{{ m.content + '\\n\\n' }}\
{% elif m.role == 'user' %}{{ 'USER: ' + m.content + '\\n' }}\
{% else %}{{ 'ASSISTANT: ' + m.content + eos_token + '\\n' }}\
{% endif %}\
{% endfor %}\
{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

#[cfg(test)]
mod tests {
    use super::super::{ChatMessage, ChatTemplate};
    use super::*;

    fn render(name: &str, msgs: &[(&str, &str)]) -> String {
        let t = ChatTemplate::new(source(name).unwrap()).unwrap();
        let msgs: Vec<ChatMessage> = msgs.iter().map(|(r, c)| ChatMessage::new(*r, *c)).collect();
        t.render(&msgs, true, "<s>", "</s>").unwrap()
    }

    const CONV: &[(&str, &str)] = &[
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Why?"),
    ];

    /// Each built-in renders llama.cpp's text for the same conversation (with BOS).
    #[test]
    fn builtins_render_llama_cpp_s_formats() {
        let want = [
            (
                "chatml",
                "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
                 <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n\
                 <|im_start|>assistant\n",
            ),
            (
                "llama2",
                "<s>[INST] Be brief.\nHi [/INST]Hello!</s>[INST] Why? [/INST]",
            ),
            (
                "llama2-sys",
                "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]Hello!</s>[INST] Why? [/INST]",
            ),
            (
                "llama3",
                "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
                 <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\
                 <|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n",
            ),
            (
                "gemma",
                "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n\
                 Hello!<end_of_turn>\n<start_of_turn>user\nWhy?<end_of_turn>\n\
                 <start_of_turn>model\n",
            ),
            (
                "zephyr",
                "<s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n\
                 <|user|>\nWhy?</s>\n<|assistant|>\n",
            ),
            (
                "phi3",
                "<s><|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n\
                 Hello!<|end|>\n<|user|>\nWhy?<|end|>\n<|assistant|>\n",
            ),
            (
                "vicuna",
                "<s>Be brief.\n\nUSER: Hi\nASSISTANT: Hello!</s>\nUSER: Why?\nASSISTANT:",
            ),
        ];
        assert_eq!(want.len(), BUILTIN.len());
        for (name, text) in want {
            assert_eq!(render(name, CONV), text, "{name}");
        }
    }

    #[test]
    fn unknown_names_have_no_source() {
        assert!(source("alpaca").is_none());
        assert!(names().starts_with("chatml, llama2, "));
    }
}

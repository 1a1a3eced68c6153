//! Chat templates are programs from a model's download: one that doubles a value in a
//! loop must fail fast with bounded memory, and real templates must render as before.
//! One test function, so that no other test of this binary allocates while the peak RSS
//! is measured.

mod common;

use std::time::{Duration, Instant};

use llq::chat::{ChatError, ChatMessage, ChatTemplate};

/// Gemma 3's chat template (google/gemma-3-*-it, tokenizer_config.json).
const GEMMA3: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
"#;

/// This process's peak resident set (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Reset the peak to the current resident set (Linux >= 4.0).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Render `src` for one short message: (result, time, growth of the peak RSS).
fn render_measured(src: &str) -> (Result<String, ChatError>, Duration, u64) {
    let t = ChatTemplate::new(src).unwrap();
    let msgs = [ChatMessage::new("user", "hi")];
    reset_peak_rss();
    let before = peak_rss();
    let t0 = Instant::now();
    let r = t.render(&msgs, true, "<s>", "</s>");
    (r, t0.elapsed(), peak_rss().saturating_sub(before))
}

fn conversation(n: usize, len: usize) -> Vec<ChatMessage> {
    (0..n)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            ChatMessage::new(role, format!("{i} {}", "word ".repeat(len / 5)))
        })
        .collect()
}

#[test]
fn growing_templates_fail_fast_in_bounded_memory_and_real_ones_render() {
    // Ways to double a string: in a namespace (`~`, `+`, `* 2`) and by macro recursion
    // (no namespace needed; the recursion limit stops it first). Without a memory bound
    // the first one reaches gigabytes (issue #14: 5 GB in 35 s).
    //
    // Then values whose expanded form doubles while their memory grows by a slot: a list
    // doubled with `+` (minijinja materializes a lazy concatenation deeper than 32), and
    // lists and maps that hold the previous step twice, then formatted (`{{ }}`, `~`,
    // `string`), serialized (`tojson`), compared or hashed (`unique`). Before the patch
    // in vendor/minijinja (fuel for the items those walks visit) each was still running,
    // memory growing, when killed after 10-20 s: 2^40 items take hours.
    let hostile = [
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}\
         {% endfor %}{{ ns.l | length }}",
        "{% set ns = namespace(l=['abcdefgh' * 100]) %}{% for i in range(40) %}\
         {% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}\
         {% endfor %}{{ (ns.l ~ 'x') | length }}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}\
         {% endfor %}{{ ns.l | string | length }}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}\
         {% endfor %}{{ ns.l | tojson | length }}",
        "{% set ns = namespace(d={}) %}{% for i in range(40) %}\
         {% set ns.d = {'a': ns.d, 'b': ns.d} %}{% endfor %}{{ ns.d | tojson | length }}",
        "{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(40) %}\
         {% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}\
         {{ ns.a == ns.b }}",
        "{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(40) %}\
         {% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}\
         {{ [ns.a, ns.b] | unique | list | length }}",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}\
         {% endfor %}{{ ns.s | length }}",
        "{% set ns = namespace(s='abcdefgh' * 1000) %}{% for i in range(64) %}\
         {% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% macro f(s, n) %}{% if n > 0 %}{{ f(s ~ s, n - 1) }}{% else %}{{ s | length }}\
         {% endif %}{% endmacro %}{{ f('x', 40) }}",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s * 2 %}\
         {% endfor %}{{ ns.s | length }}",
    ];
    for src in hostile {
        let (r, took, grew) = render_measured(src);
        let e = r.expect_err(src).to_string();
        eprintln!("{took:?}, peak RSS +{} MiB: {e}", grew >> 20);
        let bounded = (e.contains("out of fuel") && e.contains("64 bytes"))
            || (src.contains("macro") && e.contains("recursion limit"))
            || (src.ends_with("{{ ns.l }}") && e.contains("output is larger than 16 MiB"));
        assert!(bounded, "{src}: {e}");
        assert!(took < Duration::from_secs(10), "{src}: {took:?}");
        assert!(grew < 256 << 20, "{src}: peak RSS grew {} MiB", grew >> 20);
    }

    // Gemma 3 renders as transformers' apply_chat_template does.
    let gemma = ChatTemplate::new(GEMMA3).unwrap();
    let msgs = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", " Hi! "),
        ChatMessage::new("assistant", "Hello."),
        ChatMessage::new("user", "Why is the sky blue?"),
    ];
    assert_eq!(
        gemma.render(&msgs, true, "<bos>", "<eos>").unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\n\
         Hello.<end_of_turn>\n<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    // SmolLM2's template on its fixture conversations (transformers' renderings).
    let dir = common::fixtures().join("tokenizers/smollm2-bpe");
    let smol =
        ChatTemplate::new(&std::fs::read_to_string(dir.join("chat_template.jinja")).unwrap())
            .unwrap();
    let cases = std::fs::read_to_string(dir.join("chat_template_cases.jsonl")).unwrap();
    let mut n = 0;
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let msgs: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let got = smol
            .render(&msgs, true, "<|im_start|>", "<|im_end|>")
            .unwrap();
        assert_eq!(got, case["rendered"].as_str().unwrap());
        n += 1;
    }
    assert!(n >= 3);

    // Long conversations stay within the budget: many short messages, and a few long
    // ones up to the 16 MiB output cap.
    for t in [&gemma, &smol] {
        for (count, len) in [(5000, 100), (2, 4_000_000), (4, 3_500_000)] {
            let msgs = conversation(count, len);
            let out = t.render(&msgs, true, "<bos>", "<eos>");
            assert!(out.is_ok(), "{count} x {len}: {:?}", out.err());
        }
    }
}

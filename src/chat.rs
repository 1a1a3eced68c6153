//! Hugging Face style chat templates (Jinja, rendered with `minijinja`).
//!
//! Like transformers, templates are compiled with `trim_blocks` and
//! `lstrip_blocks`, loop controls, Python string/dict methods (`.strip()`,
//! `.items()`, ...), and the helpers `raise_exception(msg)` and
//! `strftime_now(fmt)`.

pub mod builtin;
mod select;

pub use select::{choose_template, TemplateSource, MAX_TEMPLATE_FILE};

use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Errors from compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat template does not compile{}: {msg}", line_suffix(*.line))]
    Syntax { msg: String, line: Option<usize> },
    #[error("tokenizer_config.json: {0}")]
    Config(String),
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    #[error("chat template failed to render{}: {msg}", line_suffix(*.line))]
    Render { msg: String, line: Option<usize> },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

const RAISED_PREFIX: &str = "raise_exception: ";

/// The work a render may do, in minijinja fuel: one unit per instruction, and one per 64
/// bytes of every string, list or map the template builds (minijinja checks an
/// allocation against the fuel left before making it). So the fuel bounds memory too:
/// a template that doubles a string (in a `namespace()`, through macro recursion, ...)
/// builds at most 64 bytes per unit in all. A render gets a base, plus an allowance per
/// message and per byte of message content, so that long conversations still render:
/// SmolLM2's and Gemma 3's templates use about 30-60 units per message and 0.05-0.45 per
/// byte of output (measured on 1 to 1000 messages, up to 8 MB of content). The base
/// alone allows 64 MB of data; `{% for i in range(100000) %}{% for j in range(100000) %}`
/// runs out within it.
const TEMPLATE_FUEL: u64 = 1_000_000;
const TEMPLATE_FUEL_PER_MESSAGE: u64 = 1_000;
/// Units per byte of message content (one unit pays for 64 bytes: 16 bytes built per
/// byte of input).
const TEMPLATE_FUEL_PER_CONTENT_BYTE: f64 = 0.25;

/// The fuel of one render of `messages` (see [`TEMPLATE_FUEL`]).
fn render_fuel(messages: &[ChatMessage]) -> u64 {
    let bytes: usize = messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum();
    TEMPLATE_FUEL
        .saturating_add(TEMPLATE_FUEL_PER_MESSAGE.saturating_mul(messages.len() as u64))
        .saturating_add((bytes as f64 * TEMPLATE_FUEL_PER_CONTENT_BYTE) as u64)
}

/// Nesting depth of macros, includes and expressions.
const TEMPLATE_RECURSION: usize = 100;
/// Longest rendered conversation (bytes): a template that doubles a string in a loop
/// stops here.
pub const MAX_RENDERED: usize = 16 << 20;

fn describe(e: &Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template came from when it was not the model's own (a file, a built-in
    /// name), for error messages.
    origin: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles a template source (e.g. `tokenizer_config.json`'s `chat_template`).
    pub fn new(source: &str) -> Result<ChatTemplate, ChatError> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| ChatError::Syntax {
                    msg: describe(&e),
                    line: None,
                })?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // A template is a program from the model's download: bound its work, data and
        // depth (the fuel is set per render, see `render`).
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("{RAISED_PREFIX}{msg}"),
            ))
        });
        env.add_function("strftime_now", |fmt: String| -> String {
            strftime(&fmt, now_utc())
        });
        env.add_template_owned("chat_template", source.to_owned())
            .map_err(|e| ChatError::Syntax {
                msg: describe(&e),
                line: e.line(),
            })?;
        Ok(ChatTemplate { env, origin: None })
    }

    /// Name where this template came from (a file's path, a built-in's name): errors
    /// while rendering then say which template failed.
    pub fn with_origin(mut self, origin: impl Into<String>) -> ChatTemplate {
        self.origin = Some(origin.into());
        self
    }

    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The template stored in a `tokenizer_config.json` (`chat_template` as a
    /// string, or the entry named `default` of a list of `{name, template}`).
    /// `Ok(None)` when the config has no template.
    pub fn from_tokenizer_config(config_json: &[u8]) -> Result<Option<ChatTemplate>, ChatError> {
        let v: serde_json::Value =
            serde_json::from_slice(config_json).map_err(|e| ChatError::Config(e.to_string()))?;
        let src = match v.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.as_str(),
            Some(serde_json::Value::Array(list)) => {
                let named = |n: &str| {
                    list.iter()
                        .find(|e| e.get("name").and_then(|x| x.as_str()) == Some(n))
                };
                match named("default").or_else(|| list.first()) {
                    Some(e) => e.get("template").and_then(|t| t.as_str()).ok_or_else(|| {
                        ChatError::Config("chat_template entry without a template string".into())
                    })?,
                    None => return Ok(None),
                }
            }
            Some(_) => {
                return Err(ChatError::Config(
                    "chat_template is neither a string nor a list".into(),
                ))
            }
        };
        ChatTemplate::new(src).map(Some)
    }

    /// Renders a conversation. `add_generation_prompt` appends the assistant
    /// header; `bos_token` / `eos_token` are exposed to the template.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ChatError> {
        // The compiled template is shared by the clone; only the limits are its own.
        let mut env = self.env.clone();
        let fuel = render_fuel(messages);
        env.set_fuel(Some(fuel));
        let tmpl = env
            .get_template("chat_template")
            .map_err(|e| ChatError::Render {
                msg: describe(&e),
                line: e.line(),
            })?;
        let ctx = context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        };
        let mut out = CappedWriter::default();
        let result = tmpl.render_captured_to(ctx, &mut out).map(drop);
        result
            .map(|()| String::from_utf8_lossy(&out.bytes).into_owned())
            .map_err(|e| {
                if out.overflowed {
                    return ChatError::Render {
                        msg: format!("the output is larger than {} MiB", MAX_RENDERED >> 20),
                        line: None,
                    };
                }
                if e.kind() == ErrorKind::OutOfFuel {
                    return ChatError::Render {
                        msg: format!(
                            "out of fuel: the template did more work or built more data \
                             than a conversation of {} messages allows ({fuel} units; one \
                             unit per instruction or per 64 bytes built)",
                            messages.len()
                        ),
                        line: e.line(),
                    };
                }
                // Find a raise_exception() anywhere in the error chain.
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                while let Some(err) = cur {
                    if let Some(me) = err.downcast_ref::<Error>() {
                        if let Some(d) = me.detail() {
                            if let Some(m) = d.strip_prefix(RAISED_PREFIX) {
                                return ChatError::Raised(m.to_string());
                            }
                        }
                    }
                    cur = err.source();
                }
                ChatError::Render {
                    msg: describe(&e),
                    line: e.line(),
                }
            })
    }
}

/// Collects rendered output up to [`MAX_RENDERED`] bytes, then fails the render.
#[derive(Default)]
struct CappedWriter {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A token's text as a template variable (`bos_token`, `eos_token`); "" for none.
pub fn special_text(tok: &Tokenizer, id: Option<u32>) -> String {
    id.map(|i| String::from_utf8_lossy(tok.token_piece(i)).into_owned())
        .unwrap_or_default()
}

impl ChatTemplate {
    /// Render `messages` with `bos_token`/`eos_token` taken from the tokenizer.
    pub fn render_for(
        &self,
        tok: &Tokenizer,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let bos = special_text(tok, tok.bos_id());
        let eos = special_text(tok, tok.eos_id());
        self.render(messages, add_generation_prompt, &bos, &eos)
    }
}

/// A conversation's prompt tokens, the one way every shell (CLI `run --chat`, `chat`, the
/// C API's callers via `llq_chat_apply_template`) turns messages into ids:
/// - with a template: rendered with the assistant header appended, then encoded with
///   special-token text parsed and no BOS added (templates write BOS themselves);
/// - without one: the messages' contents joined by newlines, as plain text (BOS as the
///   tokenizer asks, special-token text *not* parsed: it is the user's text).
pub fn encode_messages(
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    messages: &[ChatMessage],
) -> Result<Vec<u32>, ChatError> {
    Ok(match template {
        Some(t) => tok.encode_prompt(&t.render_for(tok, messages, true)?, false, true),
        None => {
            let text: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
            tok.encode_prompt(&text.join("\n"), true, false)
        }
    })
}

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
    /// 1-based day of the year.
    pub yday: u32,
}

fn now_utc() -> DateTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    from_unix(secs)
}

/// Converts Unix seconds to a civil UTC date (proleptic Gregorian).
pub(crate) fn from_unix(secs: i64) -> DateTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a cycle year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(month - 1) as usize] + day + u32::from(leap && month > 2);
    DateTime {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
        yday,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A subset of C `strftime` (the codes chat templates use).
pub(crate) fn strftime(fmt: &str, t: DateTime) -> String {
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(code) = it.next() else {
            out.push('%');
            break;
        };
        let month = MONTHS[(t.month - 1) as usize];
        let day = DAYS[t.weekday as usize];
        let h12 = if t.hour.is_multiple_of(12) {
            12
        } else {
            t.hour % 12
        };
        let s = match code {
            'Y' => t.year.to_string(),
            'y' => format!("{:02}", t.year.rem_euclid(100)),
            'm' => format!("{:02}", t.month),
            'd' => format!("{:02}", t.day),
            'e' => format!("{:>2}", t.day),
            '-' => match it.next() {
                Some('d') => t.day.to_string(),
                Some('m') => t.month.to_string(),
                Some('H') => t.hour.to_string(),
                Some('I') => h12.to_string(),
                Some(o) => format!("%-{o}"),
                None => "%-".into(),
            },
            'H' => format!("{:02}", t.hour),
            'I' => format!("{h12:02}"),
            'M' => format!("{:02}", t.minute),
            'S' => format!("{:02}", t.second),
            'p' => (if t.hour < 12 { "AM" } else { "PM" }).into(),
            'B' => month.into(),
            'b' | 'h' => month[..3].into(),
            'A' => day.into(),
            'a' => day[..3].into(),
            'j' => format!("{:03}", t.yday),
            'w' => t.weekday.to_string(),
            'F' => format!("{}-{:02}-{:02}", t.year, t.month, t.day),
            'T' => format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
            'Z' => "UTC".into(),
            'z' => "+0000".into(),
            '%' => "%".into(),
            'n' => "\n".into(),
            o => format!("%{o}"),
        };
        out.push_str(&s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_tokenizer_config() {
        let cfg = br#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ bos_token }}"}]}"#;
        let t = ChatTemplate::from_tokenizer_config(cfg).unwrap().unwrap();
        assert_eq!(t.render(&[], false, "<s>", "").unwrap(), "D<s>");
        assert!(ChatTemplate::from_tokenizer_config(b"{}")
            .unwrap()
            .is_none());
        assert!(ChatTemplate::from_tokenizer_config(b"{").is_err());
    }

    #[test]
    fn civil_dates() {
        let t = from_unix(0);
        assert_eq!(
            (t.year, t.month, t.day, t.weekday, t.yday),
            (1970, 1, 1, 4, 1)
        );
        // 2024-02-29 12:34:56 UTC (leap day, Thursday).
        let t = from_unix(1_709_210_096);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2024, 2, 29, 12, 34, 56)
        );
        assert_eq!(t.weekday, 4);
        assert_eq!(strftime("%d %b %Y", t), "29 Feb 2024");
        assert_eq!(strftime("%A, %B %-d, %Y", t), "Thursday, February 29, 2024");
        assert_eq!(strftime("%j", t), "060");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t =
            ChatTemplate::new("{{ raise_exception('only user and assistant roles') }}").unwrap();
        let e = t.render(&[], false, "", "").unwrap_err();
        assert!(
            matches!(&e, ChatError::Raised(m) if m == "only user and assistant roles"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_line() {
        let e = ChatTemplate::new("ok\n{% for x in %}").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("line 2"), "{s}");
    }

    #[test]
    fn pycompat_and_loop_controls() {
        let src = "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}\
                   [{{ m.content.strip() }}]{% endfor %}{{ bos_token }}{{ eos_token }}";
        let t = ChatTemplate::new(src).unwrap();
        let msgs = [
            ChatMessage::new("user", "  hi  "),
            ChatMessage::new("skip", "x"),
            ChatMessage::new("assistant", "yo\n"),
        ];
        assert_eq!(
            t.render(&msgs, false, "<s>", "</s>").unwrap(),
            "[hi][yo]<s></s>"
        );
        let t = ChatTemplate::new("{{ strftime_now('%Y') | length }}").unwrap();
        assert_eq!(t.render(&[], false, "", "").unwrap(), "4");
    }
}

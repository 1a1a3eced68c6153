//! The commands of `llq chat`: a line that starts with `/` is one of them and never reaches
//! the model (`//` sends a message that starts with `/`). This module only parses; the
//! values' ranges are checked by the library (`SamplerParams::validate`), as for the flags.

use std::path::PathBuf;

/// What `/help` prints.
pub const HELP: &str = "\
commands (never sent to the model):
  /help              this list
  /reset             start the conversation over (the system message stays)
  /quit, /exit       leave (so do Ctrl-D and the end of piped input)
  /set               show the sampling settings
  /set NAME VALUE    change one: temp, top-k, top-p, min-p, repeat-penalty,
                     repeat-last-n, seed (-1 = a new random one), n-predict (-1 = no limit)
  /save FILE         write the conversation as JSON ([{\"role\": ..., \"content\": ...}, ...])
  /load FILE         replace the conversation with a saved one and evaluate it
  //text             send a message that starts with '/'
Ctrl-C stops an answer; at the prompt it clears the line.";

/// One line of input.
#[derive(Debug, PartialEq)]
pub enum Line<'a> {
    /// Nothing but white space: ignored.
    Empty,
    /// Text for the model.
    Message(&'a str),
    Command(Command),
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Help,
    Reset,
    Quit,
    /// `/set` alone: show the current values.
    Show,
    Set(Setting),
    Save(PathBuf),
    Load(PathBuf),
}

/// A `/set` of one value, parsed to its type but not range-checked.
#[derive(Debug, PartialEq, Clone, Copy)]
pub enum Setting {
    Temp(f32),
    TopK(usize),
    TopP(f32),
    MinP(f32),
    RepeatPenalty(f32),
    RepeatLastN(usize),
    /// -1 or any negative: a new random seed.
    Seed(i64),
    /// `usize::MAX` for -1 (no limit), as the `-n` flag.
    NPredict(usize),
}

impl Setting {
    /// Its name in [`SETTINGS`].
    pub fn name(self) -> &'static str {
        match self {
            Setting::Temp(_) => "temp",
            Setting::TopK(_) => "top-k",
            Setting::TopP(_) => "top-p",
            Setting::MinP(_) => "min-p",
            Setting::RepeatPenalty(_) => "repeat-penalty",
            Setting::RepeatLastN(_) => "repeat-last-n",
            Setting::Seed(_) => "seed",
            Setting::NPredict(_) => "n-predict",
        }
    }
}

/// The names `/set` takes, in the order `/set` shows them.
pub const SETTINGS: [&str; 8] = [
    "temp",
    "top-k",
    "top-p",
    "min-p",
    "repeat-penalty",
    "repeat-last-n",
    "seed",
    "n-predict",
];

/// Parse one line (without its line break). An `Err` is a message for the user: an unknown
/// command, a missing or unreadable argument.
pub fn parse(line: &str) -> Result<Line<'_>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Ok(Line::Empty);
    }
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Ok(Line::Message(line));
    };
    if rest.starts_with('/') {
        return Ok(Line::Message(rest));
    }
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    let no_arg = |c: Command| {
        if arg.is_empty() {
            Ok(Line::Command(c))
        } else {
            Err(format!("/{name} takes no argument"))
        }
    };
    let file = |c: fn(PathBuf) -> Command| {
        if arg.is_empty() {
            Err(format!("/{name} needs a file name: /{name} FILE"))
        } else {
            Ok(Line::Command(c(PathBuf::from(arg))))
        }
    };
    match name {
        "help" | "?" => no_arg(Command::Help),
        "reset" => no_arg(Command::Reset),
        "quit" | "exit" => no_arg(Command::Quit),
        "save" => file(Command::Save),
        "load" => file(Command::Load),
        "set" if arg.is_empty() => Ok(Line::Command(Command::Show)),
        "set" => parse_setting(arg).map(|s| Line::Command(Command::Set(s))),
        _ => Err(format!(
            "unknown command /{name}: /help lists the commands (start a message with // to \
             send it with a leading /)"
        )),
    }
}

/// `NAME VALUE` or `NAME=VALUE`; names as the flags spell them (`top-k`), `_` accepted for
/// `-`, `temperature` for `temp`, `n` for `n-predict`.
fn parse_setting(arg: &str) -> Result<Setting, String> {
    let (name, value) = match arg.split_once(|c: char| c == '=' || c.is_whitespace()) {
        Some((n, v)) => (n.trim(), v.trim()),
        None => (arg, ""),
    };
    let key = name.to_ascii_lowercase().replace('_', "-");
    let key = match key.as_str() {
        "temperature" => "temp",
        "n" => "n-predict",
        k => k,
    };
    if !SETTINGS.contains(&key) {
        return Err(format!(
            "unknown setting '{name}': one of {}",
            SETTINGS.join(", ")
        ));
    }
    if value.is_empty() {
        return Err(format!("/set {key} needs a value: /set {key} VALUE"));
    }
    let float = || {
        value
            .parse::<f32>()
            .map_err(|_| format!("{key}: '{value}' is not a number"))
    };
    let count = || {
        value
            .parse::<usize>()
            .map_err(|_| format!("{key}: '{value}' is not a whole number >= 0"))
    };
    Ok(match key {
        "temp" => Setting::Temp(float()?),
        "top-k" => Setting::TopK(count()?),
        "top-p" => Setting::TopP(float()?),
        "min-p" => Setting::MinP(float()?),
        "repeat-penalty" => Setting::RepeatPenalty(float()?),
        "repeat-last-n" => Setting::RepeatLastN(count()?),
        "seed" => Setting::Seed(
            value
                .parse::<i64>()
                .map_err(|_| format!("seed: '{value}' is not a whole number (-1 = random)"))?,
        ),
        "n-predict" => Setting::NPredict(
            crate::cli::common::parse_n_predict(value).map_err(|e| format!("n-predict: {e}"))?,
        ),
        _ => unreachable!("every name of SETTINGS is parsed above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        match parse(line) {
            Ok(Line::Command(c)) => c,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match parse(line) {
            Err(e) => e,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn messages_and_blank_lines() {
        assert_eq!(parse("").unwrap(), Line::Empty);
        assert_eq!(parse("  \t ").unwrap(), Line::Empty);
        // Sent as typed, leading and trailing spaces included.
        assert_eq!(parse(" Hello! ").unwrap(), Line::Message(" Hello! "));
        assert_eq!(parse("a / b").unwrap(), Line::Message("a / b"));
        assert_eq!(
            parse("//usr is a folder").unwrap(),
            Line::Message("/usr is a folder")
        );
    }

    #[test]
    fn commands() {
        assert_eq!(cmd("/help"), Command::Help);
        assert_eq!(cmd("  /help  "), Command::Help);
        assert_eq!(cmd("/?"), Command::Help);
        assert_eq!(cmd("/reset"), Command::Reset);
        assert_eq!(cmd("/quit"), Command::Quit);
        assert_eq!(cmd("/exit"), Command::Quit);
        assert_eq!(cmd("/set"), Command::Show);
        assert_eq!(
            cmd("/save my chat.json"),
            Command::Save(PathBuf::from("my chat.json"))
        );
        assert_eq!(
            cmd("/load  a.json "),
            Command::Load(PathBuf::from("a.json"))
        );
    }

    #[test]
    fn command_errors() {
        let e = err("/hepl");
        assert!(
            e.contains("unknown command /hepl") && e.contains("/help"),
            "{e}"
        );
        assert!(err("/usr/bin").contains("unknown command"));
        assert!(err("/save").contains("needs a file name"));
        assert!(err("/load   ").contains("needs a file name"));
        assert!(err("/reset now").contains("takes no argument"));
        assert!(err("/quit 1").contains("takes no argument"));
    }

    #[test]
    fn settings() {
        let set = |l: &str| match cmd(l) {
            Command::Set(s) => s,
            c => panic!("{l}: {c:?}"),
        };
        assert_eq!(set("/set temp 0.5"), Setting::Temp(0.5));
        assert_eq!(set("/set temp=0.5"), Setting::Temp(0.5));
        assert_eq!(set("/set temperature 0"), Setting::Temp(0.0));
        assert_eq!(set("/set top-k 12"), Setting::TopK(12));
        assert_eq!(set("/set top_k 12"), Setting::TopK(12));
        assert_eq!(set("/set top-p 0.9"), Setting::TopP(0.9));
        assert_eq!(set("/set min-p 0.1"), Setting::MinP(0.1));
        assert_eq!(set("/set repeat-penalty 1.1"), Setting::RepeatPenalty(1.1));
        assert_eq!(set("/set repeat-last-n 0"), Setting::RepeatLastN(0));
        assert_eq!(set("/set seed 42"), Setting::Seed(42));
        assert_eq!(set("/set seed -1"), Setting::Seed(-1));
        assert_eq!(set("/set n-predict 8"), Setting::NPredict(8));
        assert_eq!(set("/set n -1"), Setting::NPredict(usize::MAX));
        // Out-of-range values parse: the library's validation refuses them, with its range.
        assert_eq!(set("/set temp -1"), Setting::Temp(-1.0));
        assert!(matches!(set("/set top-p nan"), Setting::TopP(p) if p.is_nan()));
        for name in SETTINGS {
            assert_eq!(set(&format!("/set {name} 1")).name(), name);
        }
    }

    #[test]
    fn setting_errors() {
        let e = err("/set tmp 1");
        assert!(
            e.contains("unknown setting 'tmp'") && e.contains("top-k"),
            "{e}"
        );
        assert!(err("/set temp").contains("needs a value"));
        assert!(err("/set temp warm").contains("not a number"));
        assert!(err("/set top-k -3").contains("not a whole number"));
        assert!(err("/set n-predict -2").contains("token count"));
        assert!(err("/set seed x").contains("not a whole number"));
    }
}

//! Which chat template a conversation uses: the one place that decides, for every shell
//! (`llq run --chat`, `llq chat`): an override (a built-in name or a file of Jinja), else
//! the model's own template, else none (plain text).

use std::path::{Path, PathBuf};

use super::{builtin, ChatTemplate};
use crate::error::{Error, Result};

/// Largest template file read (bytes): real templates are a few KiB; a wrong path (a
/// model, /dev/zero) must give an error, not fill the memory.
pub const MAX_TEMPLATE_FILE: u64 = 1 << 20;

/// A template named by the user: a built-in name, or a file holding Jinja.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    Builtin(&'static str),
    File(PathBuf),
}

impl TemplateSource {
    /// `spec` as a template: a built-in name when it is one (write `./chatml` for a file
    /// of that name), else an existing file. Anything else is an error that lists the
    /// built-in names.
    pub fn parse(spec: &str) -> std::result::Result<TemplateSource, String> {
        if let Some((name, _)) = builtin::BUILTIN.iter().find(|(n, _)| *n == spec) {
            return Ok(TemplateSource::Builtin(name));
        }
        let path = Path::new(spec);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Err(format!(
                "'{spec}' is a directory: give a file holding a Jinja chat template, or one \
                 of the built-in names: {}",
                builtin::names()
            )),
            Ok(_) => Ok(TemplateSource::File(path.to_path_buf())),
            Err(_) => Err(format!(
                "'{spec}' is neither a built-in chat template nor a file (no such file); \
                 built-in names: {}",
                builtin::names()
            )),
        }
    }
}

/// The template for a conversation: `source` when given, else the model's own
/// (`model_template`), compiled; `None` when there is neither. A file is read (at most
/// [`MAX_TEMPLATE_FILE`] bytes) and compiled here; every template, built-in, file or the
/// model's, renders through the same bounded [`ChatTemplate`] (fuel, depth, output cap).
pub fn choose_template(
    source: Option<&TemplateSource>,
    model_template: Option<&str>,
) -> Result<Option<ChatTemplate>> {
    match source {
        Some(TemplateSource::Builtin(name)) => {
            let src = builtin::source(name)
                .ok_or_else(|| Error::usage(format!("no built-in chat template '{name}'")))?;
            ChatTemplate::new(src)
                .map(|t| Some(t.with_origin(format!("built-in template '{name}'"))))
                .map_err(|e| Error::usage(format!("built-in template '{name}': {e}")))
        }
        Some(TemplateSource::File(path)) => {
            let src = read_template(path)?;
            ChatTemplate::new(&src)
                .map(|t| Some(t.with_origin(path.display().to_string())))
                .map_err(|e| Error::invalid(path, e.to_string()))
        }
        None => match model_template {
            Some(src) => ChatTemplate::new(src)
                .map(Some)
                // Every ChatError of a compile reads "chat template …".
                .map_err(|e| Error::usage(format!("the model's {e}"))),
            None => Ok(None),
        },
    }
}

/// A template file as UTF-8, bounded while reading.
fn read_template(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io_while(path, "cannot read the chat template file", e))?;
    let mut bytes = Vec::new();
    file.take(MAX_TEMPLATE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_TEMPLATE_FILE {
        return Err(Error::invalid(
            path,
            format!(
                "larger than {} KiB: not a chat template (is it the right file?)",
                MAX_TEMPLATE_FILE >> 10
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::invalid(
            path,
            format!(
                "chat template file: invalid UTF-8 at byte offset {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_files_and_the_rest() {
        assert_eq!(
            TemplateSource::parse("llama3"),
            Ok(TemplateSource::Builtin("llama3"))
        );
        let e = TemplateSource::parse("alpaca").unwrap_err();
        assert!(
            e.contains("'alpaca'") && e.contains("chatml, llama2"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = TemplateSource::parse(dir.path().to_str().unwrap()).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        let f = dir.path().join("t.jinja");
        std::fs::write(&f, "{{ messages[0].content }}").unwrap();
        let s = TemplateSource::parse(f.to_str().unwrap()).unwrap();
        assert_eq!(s, TemplateSource::File(f));
        assert!(choose_template(Some(&s), None).unwrap().is_some());
        assert!(choose_template(None, None).unwrap().is_none());
    }
}

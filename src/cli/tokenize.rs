//! `llq tokenize`: text → token ids with the model's tokenizer.

use std::path::PathBuf;

use llq::format::LlqFile;
use llq::tokenizer::Tokenizer;
use llq::{Error, Result};

/// Tokenize text with the tokenizer stored in a .llq file. Prints one `id<TAB>piece` line
/// per token (pieces in their raw form, e.g. `▁Hello`, `<0x0A>`, `Ġworld`), or with --ids
/// only the ids, space-separated. No BOS is added.
#[derive(clap::Args)]
pub struct Args {
    /// The model: a .llq file, or a GGUF file or Hugging Face checkpoint directory
    /// (converted once into the cache, as for `llq run`).
    #[arg(short, long)]
    model: PathBuf,
    /// The text to tokenize.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    text: Option<String>,
    /// Read the text from this file, byte for byte (it must be UTF-8).
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Print only the ids, space-separated.
    #[arg(long)]
    ids: bool,
    /// Treat special-token text such as `<|im_start|>` as plain text (for untrusted input).
    #[arg(long)]
    no_parse_special: bool,
}

pub fn run(a: Args) -> Result<()> {
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => super::common::read_text_file(f)?,
        (None, None) => unreachable!("clap requires one"),
    };
    // Only the tokenizer is needed: read it without mapping the weights for a forward pass.
    let f = LlqFile::open(&super::common::llq_path_for(&a.model)?)?;
    let bytes = f
        .get_bytes(llq::format::keys::TOKENIZER)
        .ok_or_else(|| Error::invalid(&a.model, "has no tokenizer"))?;
    let tok = Tokenizer::from_bytes(bytes).map_err(|e| Error::invalid(&a.model, e.to_string()))?;
    let ids = tok.encode_prompt(&text, false, !a.no_parse_special);
    if a.ids {
        let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        println!("{}", s.join(" "));
    } else {
        for id in &ids {
            println!("{id}\t{}", String::from_utf8_lossy(tok.token_piece(*id)));
        }
    }
    Ok(())
}
